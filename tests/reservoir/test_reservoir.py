"""Echo state networks against ReservoirPy and against their own invariants."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from bptt.reservoir import Reservoir, Ridge, generate, mackey_glass, nrmse, series_features

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from reservoirpy.datasets import mackey_glass as rpy_mackey_glass
    from reservoirpy.nodes import Reservoir as RpyReservoir
    from reservoirpy.nodes import Ridge as RpyRidge


# --- what rounding allows ---------------------------------------------------------------
#
# Two implementations of the same arithmetic (ours, ReservoirPy, a NumPy reference; one
# CPU's BLAS/MKL/SIMD kernels against another's) differ only by rounding. The bounds below
# follow it step by step, from the unit roundoff u and the operations performed, for any
# summation order, with or without fused multiply-adds; never from what a machine printed.

U64, U32 = 2.0**-53, 2.0**-24  # unit roundoff of float64, float32


def _gamma(k, unit):
    """Higham's gamma_k = k u / (1 - k u): the relative error bound of k roundings."""
    return k * unit / (1 - k * unit)


def _tanh_units(v):
    """Relative error bound of ``_kernels._tanh`` at v, in units of U64 (derived in
    ``test_the_compiled_tanh_is_within_its_rounding_bound``)."""
    e = np.exp(-2 * np.abs(v))
    with np.errstate(divide="ignore", invalid="ignore"):
        large = 18 * e / (1 - e) + 18 * e / (1 + e) + 3
    return np.where(np.abs(v) < 0.1, 3.0, large)


_ACTIVATIONS = {  # f, f' from (pre, f(pre))
    "tanh": (np.tanh, lambda p, y: 1 - y * y),
    "identity": (lambda v: v, lambda p, y: np.ones_like(p)),
    "relu": (lambda v: np.maximum(v, 0.0), lambda p, y: (p > 0).astype(float)),
    "sigmoid": (lambda v: 1 / (1 + np.exp(-v)), lambda p, y: y * (1 - y)),
}


def _activation_error(activation, pre, y, unit):
    """Bound on |computed f(pre) - f(pre)| of every implementation compared here: ours
    (tanh: :func:`_tanh_units`), torch's (Sleef, 1 ulp = 2 units) and NumPy's (SVML's
    4-ulp kernels = 8 units; sigmoid as 1 / (1 + exp(-v)): exp's 8, then 2 roundings)."""
    if activation == "tanh":
        units = np.maximum(_tanh_units(pre), 8.0) if unit == U64 else 8.0
    else:
        units = {"identity": 0.0, "relu": 0.0, "sigmoid": 10.0}[activation]
    return units * unit * np.abs(y)


def _propagate(jacobians, deltas, window=40):
    """A first-order bound E_t >= |e_t| for errors e_t = J_t e_{t-1} + d_t, e_0 = 0,
    |d_t| <= deltas[t]: E_t = |J_t..J_{t-K+1}| E_{t-K} + sum_{s > t-K} |J_t..J_{s+1}| deltas[s].

    Over the last K = ``window`` steps the Jacobians are multiplied before the absolute
    value is taken, so that the contraction of the echo state property shows (|J| alone,
    taken a step at a time, grows even where the products shrink)."""
    steps, units = len(deltas), len(deltas[0])
    bound = np.zeros((steps, units))
    for t in range(steps):
        product, total = np.eye(units), np.zeros(units)
        for s in range(t, max(t - window, -1), -1):
            total += np.abs(product) @ deltas[s]
            product = product @ jacobians[s]
        if t - window >= 0:
            total += np.abs(product) @ bound[t - window]
        bound[t] = total
    return bound


def _state_bound(w, w_in, bias, leak, activation, x, lengths=None, unit=U64):
    """Bound (B, T, N) on |computed - exact| states of the leaky reservoir driven by x,
    for any implementation within the operation counts below; zero after each length.

    A step's local error: the pre-activation sums k nonzero products (gamma_k times the
    sum of their magnitudes), passed on by f'; f's own error; the leaky update's 4
    roundings of (1 - a)|x| + a|f|; in float32 the input's rounding to float32 too."""
    f, derivative = _ACTIVATIONS[activation]
    w, w_in, bias = (np.asarray(v, dtype=np.float64) for v in (w, w_in, bias))
    x = np.asarray(x, dtype=np.float64)
    batch, steps, _ = x.shape
    lengths = np.full(batch, steps) if lengths is None else np.asarray(lengths)
    terms = (w != 0).sum(1) + (w_in != 0).sum(1) + (bias != 0)  # (N,) nonzero terms a row
    gamma = _gamma(terms + (1 if unit == U32 else 0), unit)  # float32: the input rounded
    out = np.zeros((batch, steps, w.shape[0]))
    for b in range(batch):
        state, jacobians, deltas = np.zeros(w.shape[0]), [], []
        for t in range(int(lengths[b])):
            pre = w @ state + w_in @ x[b, t] + bias
            y, slope = f(pre), None
            slope = derivative(pre, y)
            magnitude = np.abs(w) @ np.abs(state) + np.abs(w_in) @ np.abs(x[b, t]) + np.abs(bias)
            local = leak * (slope * gamma * magnitude + _activation_error(activation, pre, y, unit))
            local += 4 * unit * ((1 - leak) * np.abs(state) + leak * np.abs(y))
            jacobians.append((1 - leak) * np.eye(w.shape[0]) + leak * slope[:, None] * w)
            deltas.append(local)
            state = (1 - leak) * state + leak * y
        if jacobians:
            out[b, : int(lengths[b])] = _propagate(jacobians, deltas)
    return out


def _within(got, expected, bound, what="states"):
    """Elementwise |got - expected| <= bound, with the worst ratio in the message."""
    got, expected = (np.asarray(v, dtype=np.float64) for v in (got, expected))
    gap = np.abs(got - expected)
    ratio = (gap / np.where(bound > 0, bound, np.inf)).max() if gap.size else 0.0
    assert (gap <= bound).all(), (
        f"{what}: {ratio:.3g} x the rounding bound, max gap {gap.max():.3g}"
    )


def _rpy_pair(units=80, seed=3):
    """A ReservoirPy reservoir and ours on its W, W_in and bias."""
    theirs = RpyReservoir(units, lr=0.3, sr=0.9, input_scaling=0.5, bias=0.1, seed=seed)
    series = rpy_mackey_glass(1500, seed=0)
    states = theirs.run(series[:-1])  # initialises the weights
    ours = Reservoir(
        units, leak_rate=0.3, W=theirs.W.toarray(), W_in=theirs.Win.toarray(), bias=theirs.bias
    )
    return theirs, ours, series, states


def _ridge_tolerance(states, alpha, washout, prediction):
    """The prediction error two ridge solvers may differ by: forward error <= condition
    number kappa(A) x backward error; the centred Gram matrix A of M rows and N units,
    formed in any order and solved by LU, has backward error <= gamma_{M + 3N}
    (Higham, Accuracy and Stability, Thms 3.5 and 9.4)."""
    rows = np.asarray(states, dtype=np.float64)[washout:]
    centred = rows - rows.mean(0)
    system = centred.T @ centred + alpha * np.eye(rows.shape[1])
    size, units = rows.shape
    return np.linalg.cond(system) * _gamma(size + 3 * units, U64) * np.abs(prediction).max()


def test_states_and_predictions_equal_reservoirpys():
    _, ours, series, their_states = _rpy_pair()
    our_states = ours.run(torch.from_numpy(series[:-1])[None], reset=True)[0]
    # each side within the rounding bound of the exact states, so within twice it of
    # each other (about 1e-14 here; measured 9e-16)
    weights = {k: v.numpy() for k, v in ours.weights().items()}
    bound = _state_bound(
        weights["W"], weights["W_in"], weights["bias"], 0.3, "tanh", series[:-1][None]
    )[0]
    _within(our_states, their_states, 2 * bound)
    their_ridge = RpyRidge(ridge=1e-4)
    their_ridge.fit(their_states[:1000], series[1:1001], warmup=50)
    our_ridge = Ridge(1e-4).fit(our_states[:1000], torch.from_numpy(series[1:1001]), washout=50)
    predicted = our_ridge.predict(our_states[1000:]).numpy()
    theirs = their_ridge.run(their_states[1000:])
    # kappa(A) x (M + 3N) u (see _ridge_tolerance), plus the states' gap, relative to
    # their size, amplified the same way: about 1e-7 here (measured 8e-12)
    relative_gap = 2 * bound.max() / np.sqrt(np.mean(their_states[50:1000] ** 2))
    tolerance = _ridge_tolerance(their_states[:1000], 1e-4, 50, theirs) * (
        1 + relative_gap / _gamma(950 + 240, U64)
    )
    np.testing.assert_allclose(predicted, theirs, rtol=0, atol=tolerance)


def test_our_mackey_glass_has_reservoirpys_statistics():
    """The two integrate the same equation with slightly different Runge-Kutta stages, so
    the chaotic series part ways; their attractors agree."""

    def stats(series):
        s = np.asarray(series).reshape(-1)[500:]
        z = s - s.mean()
        autocorrelation = [(z[:-k] * z[k:]).mean() / z.var() for k in (17, 50)]
        return np.array([s.mean(), s.std(), *autocorrelation, s.min(), s.max()])

    # Both series are scalar IEEE arithmetic and libm's pow: the same on every x86-64
    # CPU with FMA. The integrators differ systematically (over 24 seeds: mean -0.002,
    # std 0.002, autocorrelations -0.014 and -0.010, min -0.020, max 0.010); a mean
    # over 8 seeds varies by sd / sqrt(8) per side (sd over 24 seeds: 2e-4, 4e-4,
    # 0.004, 0.009, 5e-4, 5e-4), so the tolerances leave at least 6 of those combined
    # beyond the systematic gap (the least: lag 50, 0.020 = 6.0 x 0.0034)
    ours = np.mean([stats(mackey_glass(10_000, seed=s)) for s in range(8)], axis=0)
    theirs = np.mean([stats(rpy_mackey_glass(10_000, seed=s)) for s in range(8)], axis=0)
    tolerance = np.array([0.01, 0.01, 0.03, 0.03, 0.03, 0.03])
    assert (np.abs(ours - theirs) <= tolerance).all(), (ours, theirs)


def _weights(reservoir):
    """W, W_in, bias of a reservoir as float64 arrays."""
    weights = {k: v.double().numpy() for k, v in reservoir.weights().items()}
    return weights["W"], weights["W_in"], weights["bias"]


@pytest.mark.parametrize("batch", [1, 2])  # the compiled one-series loop; the batch loop
def test_a_stream_in_chunks_gives_the_states_of_one_call(batch):
    x = torch.randn(batch, 90, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    whole = Reservoir(50, spectral_radius=0.9, leak_rate=0.5, seed=1).run(x)
    chunked = Reservoir(50, spectral_radius=0.9, leak_rate=0.5, seed=1)
    parts = torch.cat([chunked.run(x[:, a:b]) for a, b in ((0, 7), (7, 50), (50, 90))], 1)
    if batch == 1:  # the same compiled instructions on the same numbers: bit for bit
        assert torch.equal(parts, whole)
    else:  # torch's (MKL's) products may pick kernels by memory alignment: each within
        # the rounding bound of the exact states
        bound = _state_bound(*_weights(chunked), 0.5, "tanh", x.numpy())
        _within(parts, whole, 2 * bound)


def test_series_of_unequal_length_have_no_padding_artefacts():
    reservoir = Reservoir(40, spectral_radius=0.95, leak_rate=0.7, seed=2)
    x = torch.randn(3, 12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([12, 5, 9])
    padded = x.clone()
    padded[1, 5:] = 99.0  # garbage after the end must not matter
    batch = reservoir.run(padded, lengths, reset=True)
    # the batch loop (torch) and the one-series loop (compiled) each within the bound
    bound = _state_bound(*_weights(reservoir), 0.7, "tanh", x.numpy(), lengths.numpy())
    for b, n in enumerate(lengths.tolist()):
        alone = reservoir.run(x[b : b + 1, :n], reset=True)[0]
        _within(batch[b, :n], alone, 2 * bound[b, :n])
        assert (batch[b, n:] == 0).all()
    means = series_features(batch, lengths)
    # two sums of the 5 states (in any order, zeros added exactly) and a division
    tolerance = 2 * (_gamma(5, U64) + U64) * batch[1, :5].abs().max()
    torch.testing.assert_close(means[1], batch[1, :5].mean(0), rtol=0, atol=float(tolerance))
    assert torch.equal(series_features(batch, lengths, "last")[2], batch[2, 8])


def test_ridge_accumulates_batches_and_solves_in_float64():
    gen = torch.Generator().manual_seed(0)
    states = torch.randn(4, 60, 10, generator=gen).float()
    y = states.double() @ torch.randn(10, 2, generator=gen, dtype=torch.float64) + 0.5
    whole = Ridge(1e-3).fit(states, y, washout=5)
    pieces = Ridge(1e-3)
    for b in range(4):
        pieces.partial_fit(states[b], y[b], washout=5)
    pieces.solve()
    rows = states[:, 5:].reshape(-1, 10).double().numpy()
    # the sums in another order, then the same solve: kappa(A) (M + 3N) u (M = 220 rows)
    tolerance = _ridge_tolerance(rows, 1e-3, 0, whole.weight)
    np.testing.assert_allclose(pieces.weight, whole.weight, rtol=0, atol=tolerance)
    assert whole.weight.dtype == np.float64
    # y is exactly linear, so the fit misses only by the ridge's shrinkage, W - W_true =
    # -alpha A^-1 W_true, which the bias b = mean(y) - mean(x) W carries over; plus the
    # rounding of W (as above) and of the bias' own sum
    centred = rows - rows.mean(0)
    lowest = np.linalg.eigvalsh(centred.T @ centred + 1e-3 * np.eye(10)).min()
    true_norms = np.linalg.norm(whole.weight, axis=0) / (1 - 1e-3 / lowest)
    means = np.linalg.norm(rows.mean(0))
    shrink = 1e-3 * means * true_norms / lowest
    rounding = _ridge_tolerance(rows, 1e-3, 0, whole.weight) * means * np.sqrt(10)
    rounding += _gamma(11, U64) * (0.5 + means * true_norms)
    assert (np.abs(whole.bias - 0.5) <= shrink + rounding).all(), (whole.bias, shrink)
    with pytest.raises(ValueError, match="not fitted"):
        Ridge().predict(states)


def _radius_and_tolerance(w, solver_tolerance=0.0):
    """How far a computed spectral radius of w may lie from its true one, twice (W was
    scaled by one computation and is measured by another): the largest eigenvalue's
    condition number 1 / |y* x| times the backward error, gamma_{10N} ||W|| for a dense
    QR algorithm (Higham; LAPACK's geev) or ARPACK's ``tol`` times the radius."""
    import scipy.linalg

    values, left, right = scipy.linalg.eig(w, left=True, right=True)
    top = np.abs(values) >= np.abs(values).max() * (1 - 1e-8)  # the pair, if complex
    condition = max(
        1
        / abs(np.vdot(left[:, i], right[:, i]))
        * np.linalg.norm(left[:, i])
        * np.linalg.norm(right[:, i])
        for i in np.flatnonzero(top)
    )
    radius = np.abs(values).max()
    per_computation = _gamma(10 * w.shape[0], U64) * np.linalg.norm(w, 2)
    return radius, condition * (2 * per_computation + solver_tolerance * radius)


def test_generated_weights_and_explicit_ones_are_checked():
    reservoir = Reservoir(60, spectral_radius=1.25, density=0.1, seed=4, input_size=2)
    radius, tolerance = _radius_and_tolerance(reservoir.W)
    assert abs(radius - 1.25) <= tolerance
    assert set(np.unique(reservoir.W_in)) <= {-1.0, 0.0, 1.0}
    with pytest.raises(ValueError, match="W must have shape"):
        Reservoir(5, W=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="leak_rate"):
        Reservoir(5, leak_rate=0)
    with pytest.raises(ValueError, match=r"x holds NaN or inf \(at series 0, step 1"):
        Reservoir(5, seed=0).run(torch.tensor([[[0.0], [float("nan")]]]))
    for name in ("W", "W_in"):
        weights = {"W": np.eye(5), "W_in": np.ones((5, 1))}
        weights[name][0, 0] = np.inf
        with pytest.raises(ValueError, match=f"{name} holds NaN or inf"):
            Reservoir(5, **weights)


def test_one_series_gives_the_same_states_on_any_number_of_threads():
    # each row of a step is summed by one thread in a fixed order, so the thread count
    # cannot change a bit; the library follows torch's setting and restores numba's
    import numba

    x = torch.randn(1, 200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    reservoir = Reservoir(300, 1.1, 0.4, density=0.05, seed=5)
    before_torch, before_numba = torch.get_num_threads(), numba.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(reservoir.run(x, reset=True))
            assert numba.get_num_threads() == before_numba
    finally:
        torch.set_num_threads(before_torch)
    assert torch.equal(runs[0], runs[1])


def _free_run_bound(reservoir, readout, start, steps, leak):
    """Bound (steps, O) on |computed - exact| predictions of a free run from the state
    ``start``: the closed loop is a reservoir whose input is its own readout, so its
    Jacobian holds W + W_in W_out^T, and a step's local error adds the readout's dot
    product of N terms (gamma_{N+1}) passed through W_in."""
    w, w_in, bias = _weights(reservoir)
    w_out, b_out = readout.weight, readout.bias
    loop = w + w_in @ w_out.T
    terms = (w != 0).sum(1) + (w_in != 0).sum(1) + 1
    state, jacobians, deltas, rounding = np.asarray(start, dtype=np.float64), [], [], []
    for _ in range(steps):
        prediction = w_out.T @ state + b_out
        rounding.append(_gamma(w.shape[0] + 1, U64) * (np.abs(w_out).T @ np.abs(state) + 1))
        pre = w @ state + w_in @ prediction + bias
        y = np.tanh(pre)
        magnitude = np.abs(w) @ np.abs(state) + np.abs(w_in) @ np.abs(prediction) + np.abs(bias)
        local = (1 - y * y) * (_gamma(terms, U64) * magnitude + np.abs(w_in) @ rounding[-1])
        local = leak * (local + _activation_error("tanh", pre, y, U64))
        deltas.append(local + 4 * U64 * ((1 - leak) * np.abs(state) + leak * np.abs(y)))
        jacobians.append((1 - leak) * np.eye(w.shape[0]) + leak * (1 - y * y)[:, None] * loop)
        state = (1 - leak) * state + leak * y
    states = np.vstack([np.zeros_like(state), _propagate(jacobians, deltas)[:-1]])
    return states @ np.abs(w_out) + np.array(rounding)


def test_generate_feeds_predictions_back():
    series = mackey_glass(1500, seed=2)
    # at ridge 1e-5 the 20-step error stayed below 0.03 for all of 10 seeds tried (at
    # 1e-6 one of 10 reservoirs diverged)
    reservoir = Reservoir(300, spectral_radius=1.0, leak_rate=0.3, seed=0)
    states = reservoir.run(series[:-1][None], reset=True)
    readout = Ridge(1e-5).fit(states[:, :1200], series[1:1201][None], washout=100)
    free = generate(reservoir, readout, series[:1200][None], 20)
    assert free.shape == (20, 1)
    # the same loop written out: each prediction is the next input. The warm-up is the
    # same compiled loop on the same numbers (the same state, bit for bit); the readout's
    # products (torch, MKL) may round otherwise, and the loop carries that on
    reservoir.run(series[:1200][None], reset=True)
    start = reservoir.state[0].copy()
    bound = _free_run_bound(reservoir, readout, start, 20, 0.3)
    value = readout.predict(torch.from_numpy(start))
    for step in range(20):
        _within(free[step], value, 2 * bound[step], f"prediction {step}")
        value = readout.predict(reservoir.run(value.reshape(1, 1, 1))[0, -1])
    # this draw's error (NumPy's streams and the series are the same on every CPU),
    # plus what another CPU's rounding could add, stays below 0.05 (the series spans
    # 0.4 .. 1.3)
    assert (free - series[1200:1220]).abs().max() + 2 * bound.max() < 0.05
    assert nrmse(series[1200:1220], series[1200:1220]) == 0


def test_japanese_vowels_from_sktime():
    from bptt.reservoir import japanese_vowels

    data = japanese_vowels()
    x, lengths, labels = data["train"]
    assert x.shape[0] == 270 and x.shape[2] == 12 and set(labels.tolist()) == set(range(9))
    x, lengths, labels = data["test"]
    assert x.shape[0] == 370 and 7 <= int(lengths.min()) and int(lengths.max()) <= 29
    assert (x[torch.arange(370), lengths - 1].abs().sum(1) > 0).all()  # the last frame is data


def test_the_vowels_task_pads_at_the_front():
    import bptt

    task = bptt.tasks.make_task("vowels", 29)
    x, y = task.test_set(0, torch.Generator())
    assert x.shape == (370, 29, 12) and y.shape == (370,)
    assert (x[:, -1].abs().sum(1) > 0).all()  # every sequence ends on a real frame
    assert (x[:, 0].abs().sum(1) == 0).sum() > 300  # most start with padding
    batch, labels = task.sample(8, torch.Generator().manual_seed(0))
    assert batch.shape == (8, 29, 12) and labels.max() < 9


@pytest.mark.parametrize("batch", [3, 12])
def test_features_equal_the_reduced_states_without_keeping_them(batch):
    gen = torch.Generator().manual_seed(batch)
    reservoir = Reservoir(30, spectral_radius=0.9, leak_rate=0.4, bias=0.1, seed=3)
    x = torch.randn(batch, 9, 2, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, 10, (batch,), generator=gen)
    reservoir.run(x[:, :4])  # a carried state, which features must neither use nor change
    carried = reservoir.state.copy()
    states = Reservoir(30, spectral_radius=0.9, leak_rate=0.4, bias=0.1, seed=3)
    states.W_in = reservoir.W_in
    for given in (lengths, None):
        # the same batch loop twice (each within the bound: torch's kernels may differ
        # by memory alignment), then sums of at most 9 states and a division
        bound = _state_bound(*_weights(states), 0.4, "tanh", x.numpy(), given)
        full = np.full(batch, 9) if given is None else given.numpy()
        run = states.run(x, given, reset=True)
        summing = 2 * (_gamma(9, U64) + U64) * run.abs().amax(1).numpy()
        for reduce in ("mean", "last"):
            expected = series_features(run, given, reduce)
            got = reservoir.features(x, given, reduce)
            if reduce == "mean":
                tolerance = 2 * bound.max(1) + summing
            else:
                tolerance = 2 * bound[np.arange(batch), full - 1]
            _within(got, expected, tolerance, reduce)
    assert np.array_equal(reservoir.state, carried)
    with pytest.raises(ValueError, match="reduce"):
        reservoir.features(x, lengths, "max")


def test_a_large_batch_of_unequal_series_matches_each_series_alone():
    reservoir = Reservoir(40, spectral_radius=0.95, leak_rate=0.7, seed=2)
    x = torch.randn(11, 8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([8, 1, 5, 8, 3, 7, 2, 6, 4, 8, 5])
    batch = reservoir.run(x, lengths, reset=True)
    bound = _state_bound(*_weights(reservoir), 0.7, "tanh", x.numpy(), lengths.numpy())
    for b, n in enumerate(lengths.tolist()):
        alone = reservoir.run(x[b : b + 1, :n], reset=True)[0]
        _within(batch[b, :n], alone, 2 * bound[b, :n])  # torch's loop; the compiled one
        assert (batch[b, n:] == 0).all()


def _reference_states(w, w_in, bias, leak, activation, x, lengths):
    """The leaky update written out step by step in NumPy: (B, T, N), zero after each
    series' length."""
    f = {
        "tanh": np.tanh,
        "identity": lambda v: v,
        "relu": lambda v: np.maximum(v, 0.0),
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    }[activation]
    batch, steps, _ = x.shape
    out = np.zeros((batch, steps, w.shape[0]))
    for b in range(batch):
        state = np.zeros(w.shape[0])
        for t in range(int(lengths[b])):
            state = (1 - leak) * state + leak * f(w @ state + w_in @ x[b, t] + bias)
            out[b, t] = state
    return out


@pytest.mark.parametrize("activation", ["tanh", "identity", "relu", "sigmoid"])
@pytest.mark.parametrize("density", [0.1, 0.5])  # the compiled sparse loops; dense products
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_loop_equals_the_update_written_out(activation, density, dtype):
    gen = torch.Generator().manual_seed(7)
    reservoir = Reservoir(
        60, 0.9, 0.6, density=density, bias=0.2, activation=activation, seed=4, dtype=dtype
    )
    x = torch.randn(70, 9, 3, generator=gen, dtype=torch.float64)  # 70 series: 3 blocks
    lengths = torch.randint(1, 10, (70,), generator=gen)
    lengths[5] = 9
    unit = U64 if dtype == torch.float64 else U32
    reservoir.run(x[:1, :1])  # draws W_in
    weights = _weights(reservoir)  # in the reservoir's dtype, exactly as float64
    bounds = {}  # ours (in its unit) + the float64 reference's, for each set of lengths
    for key, given in (("full", None), ("given", lengths)):
        ours = _state_bound(*weights, 0.6, activation, x.numpy(), given, unit=unit)
        bounds[key] = ours + _state_bound(*weights, 0.6, activation, x.numpy(), given)
    for batch, given in ((1, None), (1, lengths[:1]), (70, lengths), (70, None)):
        got = reservoir.run(x[:batch], given, reset=True)
        full = torch.full((batch,), 9) if given is None else given
        expected = _reference_states(*weights, 0.6, activation, x[:batch].numpy(), full)
        assert got.dtype == dtype
        bound = bounds["full" if given is None else "given"][:batch]
        _within(got, expected, bound)
        means = reservoir.features(x[:batch], given)
        # the mean of the bounds, plus two sums of at most 9 states and a division
        counts = full.numpy()[:, None]
        summing = (_gamma(10, unit) + _gamma(10, U64)) * np.abs(expected).max(1)
        _within(means, expected.sum(1) / counts, bound.sum(1) / counts + summing, "means")


@pytest.mark.parametrize("seed", [1, 3])  # ARPACK asked for k=1 missed on both
def test_a_large_sparse_reservoir_has_the_exact_spectral_radius(seed):
    # above 200 units the radius comes from ARPACK, whose single-eigenvalue answer fell
    # up to 1.2% short here: many eigenvalues of a random matrix nearly share the largest
    # modulus
    reservoir = Reservoir(1000, spectral_radius=1.25, density=0.1, seed=seed)
    radius, tolerance = _radius_and_tolerance(reservoir.W, solver_tolerance=1e-10)  # ARPACK's
    assert abs(radius - 1.25) <= tolerance  # (ARPACK with k=1 missed by up to 0.015)
    again = Reservoir(1000, spectral_radius=1.25, density=0.1, seed=seed)
    assert np.array_equal(again.W, reservoir.W)  # the same seed, the same W, bit for bit


def test_a_singular_ridge_system_is_a_value_error():
    states = torch.zeros(1, 20, 3, dtype=torch.float64)  # no state ever varies
    with pytest.raises(ValueError, match="singular"):
        Ridge(0.0).fit(states, torch.randn(1, 20, 1, dtype=torch.float64))


def test_a_near_nilpotent_sparse_reservoir_is_refused_or_exact():
    # found in review: with about one nonzero a row ARPACK gave a spurious radius
    refused = 0
    for seed in range(12):  # one nonzero a row: some draws are nilpotent (seed 4 is)
        try:
            drawn = Reservoir(500, spectral_radius=0.9, density=0.002, seed=seed)
        except ValueError as err:
            assert "nilpotent" in str(err)
            refused += 1
            continue
        radius, tolerance = _radius_and_tolerance(drawn.W)  # dense below 2 nonzeros a row
        assert abs(radius - 0.9) <= tolerance
    assert refused >= 1  # which draws have no cycle is combinatorics: the same anywhere
    reservoir = Reservoir(300, spectral_radius=0.9, density=0.004, seed=14)
    radius, tolerance = _radius_and_tolerance(reservoir.W)
    assert abs(radius - 0.9) <= tolerance


def test_features_of_one_long_series_keep_no_states():
    # found in review: the one-series loop kept every state just to sum them
    import tracemalloc

    reservoir = Reservoir(200, 0.9, 0.5, density=0.05, seed=6)
    x = torch.rand(1, 20_000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    reservoir.features(x[:, :10])  # compiled and W_in drawn outside the measurement
    tracemalloc.start()
    try:
        means = reservoir.features(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000 * 200 * 8 / 20  # the states would take 32 MB
    states = reservoir.run(x, reset=True)  # the same compiled loop: the same states
    # two sums of T = 20,000 states in different orders (gamma_T times the sum of their
    # magnitudes, each) and a division: about 4e-12 here
    tolerance = 2 * (_gamma(20_000, U64) * states.abs().mean(1) + U64 * means.abs())
    _within(means, states.mean(1), tolerance.numpy(), "means")


def test_tiny_drives_keep_their_relative_precision():
    # found in review: tanh from exp lost relative precision near 0 (1e-7 at 1e-10)
    reservoir = Reservoir(50, 0.9, 0.5, input_scaling=1e-12, seed=7)
    x = torch.rand(2, 30, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    alone = reservoir.run(x[:1], reset=True)  # the compiled loop
    batch = reservoir.run(x, reset=True)  # torch's tanh
    assert alone.abs().max() > 0
    # the bound scales with the states (about 1e-12 here): relative, about 1e-14
    bound = _state_bound(*_weights(reservoir), 0.5, "tanh", x[:1].numpy())
    _within(alone, batch[:1], 2 * bound)


def test_a_hand_set_state_of_another_dtype_is_converted():
    reservoir = Reservoir(30, 0.9, 0.5, seed=8, dtype=torch.float32)
    x = torch.rand(1, 5, 1)
    reservoir.run(x)
    reservoir.state = reservoir.state.astype(np.float64)
    assert reservoir.run(x).dtype == torch.float32


def test_a_process_forked_after_a_parallel_run_still_runs_a_series():
    # found in review: GNU OpenMP cannot run in such a child (numba killed it); the
    # child falls back to the one-thread loop
    import os
    import pickle

    reservoir = Reservoir(100, 0.9, 0.5, density=0.1, seed=9)
    x = torch.rand(1, 50, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = reservoir.run(x, reset=True)  # the parallel loop has run in this process
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: report and leave without running pytest's teardown
        try:
            os.write(write, pickle.dumps(reservoir.run(x, reset=True).numpy()))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        got = pickle.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # another compilation of the same loop: equal up to the order of the vectorised sums
    _within(got, expected, 2 * _state_bound(*_weights(reservoir), 0.5, "tanh", x.numpy()))


def test_the_compiled_tanh_is_within_its_rounding_bound():
    """Against tanh to 120 bits (mpmath), value by value, within the bound derived from
    the kernel's operations (u = 2^-53; Higham's gamma_k = k u / (1 - k u)):

    |v| < 0.1: v (1 + s), s the odd series to v^17 by Horner on v^2 <= 0.01: gamma_16
    times sum |c_k| v^2k <= 0.0034 (0.06 u), v^2 rounded (0.004 u), then 1 + s and the
    product (2 u); truncation below 1e-21: 3 u in all.

    |v| >= 0.1: e = e^-2|v| as 2^-n e^r, r = n ln2_hi + n ln2_lo - 2|v| with n ln2_hi and
    the subtraction exact (|dr| <= u |r|, |r| <= ln2/2); e^r - 1 by Horner to r^13 (26
    roundings: gamma_26 (e^|r| - 1) <= 10.8 u; dr gives e^r |dr| <= 0.5 u; truncation
    0.06 u), 1 + it (1.42 u): 12.7 u absolute on e^r >= 0.707, so 18 u relative on e,
    and 2^-n is exact. Then (1 - e) / (1 + e) magnifies it by e / (1 - e) and
    e / (1 + e), plus three roundings: 18 u e / (1 - e) + 18 u e / (1 + e) + 3 u, at
    most 92 u (1e-14) just above 0.1 and 3.7 u beyond |v| = 2 (:func:`_tanh_units`).
    """
    import mpmath
    from numba import njit

    from bptt.reservoir._kernels import _FAST, _tanh

    @njit(fastmath=_FAST)
    def over(values, out):  # a loop, as in the reservoir loop (vectorised)
        for i in range(values.shape[0]):
            out[i] = _tanh(values[i])

    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.standard_normal(4000) * 2,
            np.linspace(-25, 25, 2001),
            np.linspace(0.1, 0.3, 1001),  # where the bound is widest
            10.0 ** rng.uniform(-300, 3, 2000) * rng.choice([-1, 1], 2000),
            [0.0, -0.0, 0.1, -0.1, np.nextafter(0.1, 0), 19.0, 20.5, 1e300, np.inf, -np.inf],
        ]
    )
    out = np.empty_like(values)
    over(values, out)
    with mpmath.workprec(120):
        exact = [mpmath.tanh(v) if np.isfinite(v) else mpmath.mpf(np.sign(v)) for v in values]
        pairs = zip(out, exact, strict=True)
        error = np.array(
            [float(abs(mpmath.mpf(o) - e) / abs(e)) if e else abs(o) for o, e in pairs]
        )
    units = error / U64
    worst = (units / _tanh_units(values)).argmax()
    assert (units <= _tanh_units(values)).all(), (values[worst], units[worst])
    assert np.array_equal(np.signbit(out), np.signbit(values))  # tanh keeps the sign, -0 too


# --- saving and converting a reservoir ----------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])  # the compiled one-series loop; the batch loop
def test_a_saved_and_loaded_reservoir_runs_on_bit_for_bit(tmp_path, batch):
    gen = torch.Generator().manual_seed(batch)
    x = torch.rand(batch, 60, 2, generator=gen, dtype=torch.float64)
    source = Reservoir(80, 0.9, 0.5, density=0.1, bias=0.1, seed=5)
    source.run(x[:, :25])  # a carried state, to be saved with the weights
    torch.save(source.state_dict(), tmp_path / "reservoir.pt")
    saved = torch.load(tmp_path / "reservoir.pt", weights_only=True)
    assert sorted(saved) == ["W", "W_in", "bias", "state"]
    twin = Reservoir(80, leak_rate=0.5, density=0.1, seed=6)  # other weights, replaced
    assert twin.load_state_dict(saved) is twin
    for a, b in ((twin.run(x[:, 25:]), source.run(x[:, 25:])), (twin.run(x), source.run(x))):
        if batch == 1:  # the same compiled instructions on the same numbers: bit for bit
            assert torch.equal(a, b)
        else:  # torch's (MKL's) products may pick kernels by memory alignment
            bound = _state_bound(*_weights(source), 0.5, "tanh", x.numpy())
            _within(a, b, 2 * bound.max())
    with pytest.raises(ValueError, match=r"state_dict\['W'\] must have shape \(40, 40\)"):
        Reservoir(40, seed=0).load_state_dict(saved)
    with pytest.raises(ValueError, match="unexpected"):
        Reservoir(80, seed=0).load_state_dict({**saved, "W_out": saved["bias"]})


def test_to_float32_gives_the_reservoir_built_in_float32():
    x = torch.rand(4, 12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    wide = Reservoir(60, 0.9, 0.6, density=0.1, bias=0.2, seed=4, input_size=2)
    narrow = Reservoir(
        60, 0.9, 0.6, density=0.1, bias=0.2, seed=4, input_size=2, dtype=torch.float32
    )
    assert wide.to("cpu") is wide and wide.dtype == torch.float64
    assert wide.to(dtype=torch.float32) is wide and wide.dtype == torch.float32
    for name in ("W", "W_in", "bias"):
        assert np.array_equal(getattr(wide, name), getattr(narrow, name)), name
    bound = _state_bound(*_weights(narrow), 0.6, "tanh", x.numpy(), unit=U32)
    for batch in (1, 4):  # the compiled loop and the batch loop run in float32 now
        got = wide.run(x[:batch], reset=True)
        assert got.dtype == torch.float32
        if batch == 1:  # the same compiled instructions on the same numbers
            assert torch.equal(got, narrow.run(x[:batch], reset=True))
        else:  # torch's (MKL's) products may pick kernels by memory alignment
            _within(got, narrow.run(x[:batch], reset=True), 2 * bound)
    assert wide.to(torch.float64).W.dtype == np.float64  # a dtype in the first place
    with pytest.raises(ValueError, match="device must be the CPU"):
        wide.to("meta")


# --- bptt esn: defaults per task, the run directory, progress -----------------------------
