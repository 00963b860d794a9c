"""Keep freed memory in the process for the next step (glibc's malloc, Linux).

A training step allocates the same large tensors every time: at T=4000, B=32, H=128 an
LRU state tensor is 131 MB. glibc serves blocks that large by ``mmap`` and gives them
back with ``munmap`` when freed, so every step faults in and zeroes every page of them
afresh. Measured (``benchmarks/engine.py --lru-only``, two threads): an LRU training
step at T=4000 took 0.89 s with glibc's defaults and 0.31 s with freed memory kept, and
``torch.nn.LSTM``'s at T=1000 0.51 s against 0.19 s. The application (``bptt`` and its
bench workers) therefore asks malloc to serve large blocks from the heap and to keep
what is freed; the library, imported into someone else's process, never does.
``BPTT_MALLOC=default`` leaves malloc as it is. The peak memory is unchanged; what the
process holds between steps stays at that peak instead of falling back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_KEEP = 2**31 - 1  # bytes freed at the heap's top before any goes back to the system
_PAD = 64 * 2**20  # grow the heap in steps of at least 64 MB


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve every block from the heap and keep freed memory.

    Returns:
        True if malloc took the settings; False where it is not glibc's (macOS,
        Windows, musl), or with ``BPTT_MALLOC=default`` in the environment.
    """
    if os.environ.get("BPTT_MALLOC", "") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = [mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, _KEEP), mallopt(_M_TOP_PAD, _PAD)]
    return all(done)
