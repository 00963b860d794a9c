"""The compiled loop for one series (a stream): sparse product and leaky update fused.

A reservoir step on one series is a sparse matrix-vector product with about 10% of the
entries nonzero, followed by a few element-wise operations. Called from Python once a
step, the calls cost as much as the arithmetic (scipy's product on 100,000 nonzeros
took 63 us, the rest of the step another 60 us, at N = 1000). Compiled with numba the
whole loop stays in machine code; the sums may be reassociated, so the gather of
``x[indices]`` is vectorised (36 us for the same product), and each step's rows are
split between the threads. The states agree with the step-by-step arithmetic to a few
units in the last place, not bit for bit.

Batches of series do not come here: there one product a step over the whole batch
(torch's CSR or BLAS product) was faster than compiled sparse loops, and torch's
activations are vectorised (numba calls libm once an element).
Activations are passed as codes (:data:`ACTIVATION_CODES`): one compiled loop serves
them all.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
import torch
from numba import njit, prange

__all__ = ["ACTIVATION_CODES", "drive_one", "drive_one_serial", "run_one"]

ACTIVATION_CODES = {"tanh": 0, "identity": 1, "relu": 2, "sigmoid": 3}

# Reassociation (vectorised sums) and fused multiply-adds, but not the flags that
# assume no NaN or inf: a reservoir with a linear activation can overflow, and that
# must show as inf, not as undefined behaviour.
_FAST = {"reassoc", "contract", "nsz", "arcp"}
_OPTIONS = {"fastmath": _FAST, "error_model": "numpy", "cache": True, "nogil": True}


@njit(inline="always", fastmath=_FAST, error_model="numpy")
def _activate(value, code):
    if code == 0:
        # tanh from expm1, -m / (2 + m) with m = e^{-2|v|} - 1: accurate for every v,
        # tiny ones included; libm's own tanh took 66 ns a call here (expm1 19 ns),
        # more than a step's share of the sparse product
        small = math.expm1(-2.0 * abs(value))
        magnitude = -small / (2.0 + small)
        return magnitude if value >= 0 else -magnitude
    if code == 2:
        return max(value, 0.0)
    if code == 3:
        return 1.0 / (1.0 + math.exp(-value))
    return value


def _drive_one(
    indptr, indices, values, w_in, bias, inputs, leak, code, state, states_out, sums, record
):
    """One series through the reservoir, in place.

    Args:
        indptr, indices, values: W (N, N) in CSR form (uint32 index arrays).
        w_in: (N, F). bias: (N,). inputs: (T, F).
        leak: the leak rate a. code: the activation's code.
        state: (N,) the starting state; holds the final state afterwards.
        states_out: (T, N) receives every state when ``record`` (else any 2-d array).
        sums: (N,) each state is added to it (pass an empty array to skip).
    """
    units, features = w_in.shape
    keep = 1.0 - leak
    accumulate = sums.shape[0] == units
    scratch = np.empty((2, units), dtype=state.dtype)
    previous = state.copy()
    for t in range(inputs.shape[0]):
        # each step writes straight into its row of the output (no copies between steps)
        current = states_out[t] if record else scratch[t % 2]
        for i in prange(units):  # one thread a row: sums in a fixed order, any thread count
            recurrent = 0.0
            for jj in range(indptr[i], indptr[i + 1]):
                recurrent += values[jj] * previous[indices[jj]]
            drive = 0.0
            for f in range(features):
                drive += w_in[i, f] * inputs[t, f]
            new = keep * previous[i] + leak * _activate(recurrent + drive + bias[i], code)
            current[i] = new
            if accumulate:
                sums[i] += new
        previous = current
    state[:] = previous


drive_one = njit(parallel=True, **_OPTIONS)(_drive_one)
# The same loop on one thread, for a process forked after the parallel one ran: GNU
# OpenMP cannot run in such a child (numba terminates it). Not cached: numba's disk
# cache keys on the Python function, and would hand back the parallel build.
drive_one_serial = njit(**{**_OPTIONS, "cache": False})(_drive_one)
_parallel_used = False
_forked_after_parallel = False


def _after_fork_in_child() -> None:
    global _forked_after_parallel
    _forked_after_parallel = _parallel_used


os.register_at_fork(after_in_child=_after_fork_in_child)


def run_one(*args) -> None:
    """:func:`drive_one` on ``torch.get_num_threads()`` threads (numba's setting is
    restored afterwards), or on one thread in a process forked after a parallel run."""
    global _parallel_used
    if _forked_after_parallel:
        drive_one_serial(*args)
        return
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    try:
        _parallel_used = True
        drive_one(*args)
    finally:
        numba.set_num_threads(before)
