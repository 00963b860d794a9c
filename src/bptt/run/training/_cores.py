"""How many threads a run should use: the cores this process may run on that other
processes leave free.

A user's machine is rarely idle. With one of two cores held by another process,
PyTorch's OpenMP pool (and numba's, in the echo state network's compiled loop) meets
at a barrier every time step, and every thread then waits for the one that shares
its core. Measured with ``benchmarks/busy_machine.py`` (a 2-core VM): on both cores
beside a busy loop a short ``bptt train`` took 2.4x its idle time at equal priority
and over 29x niced (``nice -n 19``, a background job), since the niced thread on the
busy core barely runs; ``bptt esn`` 1.7x and 34x. One thread per free core never
waits on a starved one: 1.1x and 1.1x, 1.2x and 1.2x. So the application counts the
cores of its affinity mask that were mostly idle over a short sample of
``/proc/stat`` and uses that many threads (at least one); on systems without
``/proc/stat`` it uses the whole mask.

The count is taken once, when a run starts (and kept in its checkpoints, so that a
resumed run computes with the thread count it began with: a matrix product may
round differently on another count).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import torch
from threadpoolctl import threadpool_limits

__all__ = ["allowed_cores", "free_cores", "run_threads", "thread_count"]

# a core counts as taken when other processes kept it busy this share of the sample
_BUSY_SHARE = 0.5
_SAMPLE_S = 0.1
_FRESH_S = 5.0  # a count this recent is used again (a bench starts many runs)
_last: tuple[float, int] | None = None  # (when, count) of the last sample


def allowed_cores() -> list[int]:
    """The cores this process may run on (its affinity mask, else all the machine's)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def _cpu_times() -> dict[int, tuple[int, int]]:
    """Per core: (busy, total) jiffies since boot, from /proc/stat."""
    times = {}
    with open("/proc/stat", encoding="ascii") as handle:
        for line in handle:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            values = [int(v) for v in fields[:8]]
            idle = values[3] + values[4]  # idle and iowait
            times[int(name[3:])] = (sum(values) - idle, sum(values))
    return times


def free_cores(sample_s: float = _SAMPLE_S) -> int:
    """The cores of :func:`allowed_cores` that other processes left mostly idle over
    ``sample_s`` seconds (this process sleeps meanwhile); at least 1.

    Where the load cannot be read (no ``/proc/stat``) every allowed core counts as
    free.
    """
    cores = allowed_cores()
    try:
        before = _cpu_times()
        time.sleep(sample_s)
        after = _cpu_times()
    except (OSError, ValueError, IndexError):
        return len(cores)
    taken = 0
    for core in cores:
        if core not in before or core not in after:
            continue
        busy = after[core][0] - before[core][0]
        total = after[core][1] - before[core][1]
        if total > 0 and busy / total >= _BUSY_SHARE:
            taken += 1
    return max(1, len(cores) - taken)


def thread_count(asked: int = 0) -> int:
    """The threads for a run: ``asked`` if positive, else torch's setting lowered to
    the free cores (sampled at most every few seconds)."""
    global _last
    if asked > 0:
        return asked
    now = time.monotonic()
    if _last is None or now - _last[0] > _FRESH_S:
        _last = (now, free_cores())
    return max(1, min(torch.get_num_threads(), _last[1]))


@contextlib.contextmanager
def run_threads(asked: int = 0) -> Iterator[int]:
    """torch's thread count set to :func:`thread_count` for a run, restored after;
    yields the count."""
    previous = torch.get_num_threads()
    count = thread_count(asked)
    torch.set_num_threads(count)
    try:
        with threadpool_limits(count):  # NumPy's BLAS too (the readout's solve)
            yield count
    finally:
        torch.set_num_threads(previous)
