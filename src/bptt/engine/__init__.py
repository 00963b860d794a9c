"""Engines that unroll a cell over time and backpropagate through time with taps."""

from bptt.engine._fast import has_fast_engine, has_triton_kernel
from bptt.engine._stacked import STACKABLE_CELLS, stackable, unroll_stacked
from bptt.engine._unroll import ENGINES, EngineName, require_generic, triton_refusal, unroll
from bptt.engine._unroll import _watch_unrolls as _watch_unrolls

# _watch_unrolls: the private hook bptt.diagnose taps a user's own unrolls through.
__all__ = [
    "ENGINES",
    "STACKABLE_CELLS",
    "EngineName",
    "has_fast_engine",
    "has_triton_kernel",
    "require_generic",
    "stackable",
    "triton_refusal",
    "unroll",
    "unroll_stacked",
]
