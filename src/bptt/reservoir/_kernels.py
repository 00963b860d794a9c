"""The compiled loop for one series (a stream): sparse product and leaky update fused.

A reservoir step on one series is a sparse matrix-vector product with about 10% of the
entries nonzero, followed by a few element-wise operations. Called from Python once a
step, the calls cost as much as the arithmetic (scipy's product on 100,000 nonzeros
took 63 us, the rest of the step another 60 us, at N = 1000). Compiled with numba the
whole loop stays in machine code; the sums may be reassociated, so the gather of
``x[indices]`` is vectorised (36 us for the same product), and each step's rows are
split between the threads. The states agree with the step-by-step arithmetic to a few
units in the last place, not bit for bit.

Batches of series do not come here: there a dense product over the batch (BLAS, in
torch) was as fast as a compiled sparse one, and the activations vectorise there.
Activations are passed as codes (:data:`ACTIVATION_CODES`): one compiled loop serves
them all.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
import torch
from numba import njit, prange

__all__ = ["ACTIVATION_CODES", "drive_one", "threads_like_torch"]

ACTIVATION_CODES = {"tanh": 0, "identity": 1, "relu": 2, "sigmoid": 3}

# Reassociation (vectorised sums) and fused multiply-adds, but not the flags that
# assume no NaN or inf: a reservoir with a linear activation can overflow, and that
# must show as inf, not as undefined behaviour.
_FAST = {"reassoc", "contract", "nsz", "arcp"}
_OPTIONS = {"fastmath": _FAST, "error_model": "numpy", "cache": True, "nogil": True}


@njit(inline="always", fastmath=_FAST, error_model="numpy")
def _activate(value, code):
    if code == 0:
        # tanh from exp (10 ns): libm's own tanh took 66 ns a call here, more than a
        # step's share of the sparse product
        # (1 - e^{-2|v|}) / (1 + e^{-2|v|}): within 4e-16 of tanh (absolute; for tiny |v|
        # the relative error grows, the absolute does not)
        decay = math.exp(-2.0 * abs(value))
        magnitude = (1.0 - decay) / (1.0 + decay)
        return magnitude if value >= 0 else -magnitude
    if code == 2:
        return max(value, 0.0)
    if code == 3:
        return 1.0 / (1.0 + math.exp(-value))
    return value


@njit(parallel=True, **_OPTIONS)
def drive_one(indptr, indices, values, w_in, bias, inputs, leak, code, state, states_out, record):
    """One series through the reservoir, in place.

    Args:
        indptr, indices, values: W (N, N) in CSR form (uint32 index arrays).
        w_in: (N, F). bias: (N,). inputs: (T, F).
        leak: the leak rate a. code: the activation's code.
        state: (N,) the starting state; holds the final state afterwards.
        states_out: (T, N) receives every state when ``record`` (else any array).
    """
    units, features = w_in.shape
    keep = 1.0 - leak
    scratch = np.empty((2, units), dtype=state.dtype)
    previous = state.copy()
    for t in range(inputs.shape[0]):
        # each step writes straight into its row of the output (no copies between steps)
        current = states_out[t] if record else scratch[t % 2]
        for i in prange(units):
            recurrent = 0.0
            for jj in range(indptr[i], indptr[i + 1]):
                recurrent += values[jj] * previous[indices[jj]]
            drive = 0.0
            for f in range(features):
                drive += w_in[i, f] * inputs[t, f]
            current[i] = keep * previous[i] + leak * _activate(recurrent + drive + bias[i], code)
        previous = current
    state[:] = previous


@contextmanager
def threads_like_torch() -> Iterator[None]:
    """Run the compiled loops on as many threads as torch uses (``torch.set_num_threads``
    is the one knob for the whole library), restoring numba's setting afterwards."""
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)
