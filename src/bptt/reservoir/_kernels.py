"""The compiled loop for one series (a stream): sparse product, activation, leaky update.

A reservoir step on one series is a sparse matrix-vector product with about 10% of the
entries nonzero, followed by a few element-wise operations. Called from Python once a
step, the calls cost as much as the arithmetic (scipy's product on 100,000 nonzeros
took 63 us, the rest of the step another 60 us, at N = 1000). Compiled with numba the
whole loop stays in machine code; the sums may be reassociated, so the gather of
``x[indices]`` is vectorised (36 us for the same product), and each step's rows are
split between the threads. The activation and the leaky update then run as flat loops
that vectorise (tanh by arithmetic, :func:`_tanh`: 0.39 s against 0.52 s, medians of
7, for 10,000 steps at N = 1000 with libm's expm1 inside the row loop). The states
agree with the step-by-step arithmetic to a few units in the last place, not bit for
bit.

Batches of series do not come here: there one product a step over the whole batch
(torch's CSR or BLAS product) was faster than compiled sparse loops, and torch's
activations are vectorised (numba calls libm once an element).
Activations are passed as codes (:data:`ACTIVATION_CODES`): one compiled loop serves
them all.
"""

from __future__ import annotations

import math
import os
import types
from typing import Any

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
_OPTIONS: dict[str, Any] = {"fastmath": _FAST, "error_model": "numpy", "cache": True, "nogil": True}


_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # fdlibm's split
_EXP_SERIES = tuple(1.0 / math.factorial(k) for k in range(13, 0, -1))  # 1/13! .. 1/1!
_BITS = tuple((2.0**k, 2.0 ** -(2.0**k)) for k in range(5, -1, -1))  # (2^k, 2^-2^k)
# tanh's odd series, coefficients of v^17 .. v^3 (Horner from the top)
_TANH_SERIES = (
    6404582 / 10854718875,
    -929569 / 638512875,
    21844 / 6081075,
    -1382 / 155925,
    62 / 2835,
    -17 / 315,
    2 / 15,
    -1 / 3,
)


@njit(inline="always", fastmath=_FAST, error_model="numpy")
def _tanh(value):
    """tanh by arithmetic alone, so a loop over it vectorises. Relative to the true
    tanh, by the rounding analysis in the tests: within 3 u (u = 2^-53) below |v| =
    0.1, 4 u beyond |v| = 2, at most 92 u (1e-14) just above 0.1 (measured: 4 u).
    libm's tanh took 66 ns a call here and expm1 19 ns, more than a step's share of
    the sparse product; this takes a few ns in a vectorised loop.

    Above |v| = 0.1: (1 - e) / (1 + e) with e = e^{-2|v|}, where e^{-a} = 2^-n e^{-r}
    (a = n ln 2 + r, |r| <= ln 2 / 2; e^{-r} by its series to r^13; 2^-n from n's six
    bits by multiplications, as numba has no bit casts). Below 0.1, where 1 - e would
    cancel, the odd series to v^17. The input must be finite (it is here: finite
    weights, finite inputs, bounded states); NaN would come out as +-1.
    """
    a = min(2.0 * abs(value), 40.0)  # tanh(20) is 1 in float64
    n = math.floor(a * _LOG2E + 0.5)
    r = -(a - n * _LN2_HI - n * _LN2_LO)
    exp_r = 0.0
    for coefficient in _EXP_SERIES:
        exp_r = (exp_r + coefficient) * r
    scale, rest = 1.0, n
    for power, factor in _BITS:
        bit = math.floor(rest / power)
        rest -= bit * power
        scale *= 1.0 + bit * (factor - 1.0)
    decay = (1.0 + exp_r) * scale
    large = (1.0 - decay) / (1.0 + decay)
    square, series = value * value, 0.0
    for coefficient in _TANH_SERIES:
        series = (series + coefficient) * square
    small = abs(value) * (1.0 + series)
    return math.copysign(small if abs(value) < 0.1 else large, value)


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
        record: whether to fill ``states_out``.
    """
    units, features = w_in.shape
    keep = 1.0 - leak
    accumulate = sums.shape[0] == units
    scratch = np.empty((2, units), dtype=state.dtype)
    pre = np.empty(units, dtype=state.dtype)
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
            pre[i] = recurrent + drive + bias[i]
        # flat loops on one thread: these vectorise (a few us), a parallel region would not pay
        if code == 0:
            for i in range(units):
                pre[i] = _tanh(pre[i])
        elif code == 2:
            for i in range(units):
                pre[i] = max(pre[i], 0.0)
        elif code == 3:
            for i in range(units):
                pre[i] = 1.0 / (1.0 + math.exp(-pre[i]))
        for i in range(units):
            current[i] = keep * previous[i] + leak * pre[i]
        if accumulate:
            for i in range(units):
                sums[i] += current[i]
        previous = current
    state[:] = previous


def _renamed(function: Any, name: str) -> Any:
    """A copy of ``function`` under another name: numba's disk cache files a build
    under its function's name, so the serial build gets a cache file of its own
    instead of being handed the parallel one."""
    copy = types.FunctionType(function.__code__, function.__globals__, name)
    copy.__qualname__, copy.__doc__ = name, function.__doc__
    return copy


drive_one = njit(parallel=True, **_OPTIONS)(_drive_one)
# The same loop on one thread: where one thread is asked for (a busy machine), and in
# a process forked after the parallel one ran (GNU OpenMP cannot run in such a child;
# numba terminates it). Cached under its own name (compiling it takes about 3 s).
drive_one_serial = njit(**_OPTIONS)(_renamed(_drive_one, "_drive_one_serial"))
_parallel_used = False
_forked_after_parallel = False


def _after_fork_in_child() -> None:
    global _forked_after_parallel
    _forked_after_parallel = _parallel_used


os.register_at_fork(after_in_child=_after_fork_in_child)


def run_one(*args) -> None:
    """:func:`drive_one` on ``torch.get_num_threads()`` threads (numba's setting is
    restored afterwards), or :func:`drive_one_serial` on this thread alone: where one
    thread is asked for, and in a process forked after a parallel run.

    One thread runs the serial build, not the parallel one on a pool of one: numba's
    pool hands each step to a worker thread and waits for it, and a worker that shares
    a busy core with a niced process barely runs (measured: ``bptt esn --units 1000``
    niced beside a busy core took 141.6 s on a pool of one, against 4.6 s idle, and 5.3 s
    on this thread alone)."""
    global _parallel_used
    # numba.config sets its NUMBA_* attributes at run time, unseen by type checkers
    most = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    threads = max(1, min(torch.get_num_threads(), most))
    if _forked_after_parallel or threads == 1:
        drive_one_serial(*args)
        return
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        _parallel_used = True
        drive_one(*args)
    finally:
        numba.set_num_threads(before)
