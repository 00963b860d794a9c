"""The built-in cells' kernels: a whole sequence forward and a hand-written backward,
hidden-gradient taps inside (:mod:`bptt.taps`).

Below the cells and the engines: a cell class declares the kernel that computes it
(``kernel = ELMAN`` in its body, :class:`Kernel`), and :mod:`bptt.engine` reads that
declaration; this package imports neither.

The contract. A kernel's ``run(cell, x, state, taps, last_only)`` is one run, x
(B, T, F); a kernel that ``stacks`` also has ``run_stacked(cells, x, state, taps)``
for K cells of one class, x (K, B, T, F), ``taps[k]`` run k's. The recurrences (RNN
and orthogonal RNN, LSTM, GRU) are each one autograd Function whose buffers are
(T, K, B, ·), K = 1 for a single run (:mod:`bptt._kernels._common`): the stacked runs
and the single run share every line of forward and backward, taps included. A kernel
for another device or backend (CUDA graphs, Triton) takes the same arguments and
:class:`Pass` and keeps the same layout.
"""

from bptt._kernels._common import Pass
from bptt._kernels._elman import ELMAN
from bptt._kernels._gru import GRU
from bptt._kernels._kernel import Kernel, RecurrenceKernel
from bptt._kernels._lstm import LSTM
from bptt._kernels._scan import DEEP_LRU, GATED_LOG_SCAN, LRU
from bptt._kernels._triton import NO_KERNEL as NO_TRITON_KERNEL

__all__ = [
    "DEEP_LRU",
    "ELMAN",
    "GATED_LOG_SCAN",
    "GRU",
    "LRU",
    "LSTM",
    "NO_TRITON_KERNEL",
    "Kernel",
    "Pass",
    "RecurrenceKernel",
]
