"""Threshold policies against small references written from the papers' definitions."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bptt.clip import (
    AdaptiveClip,
    Calibrate,
    Fixed,
    NoClip,
    Percentile,
    PerStep,
    Value,
    ZScore,
    adaptive_clip_grad_,
)
from bptt.taps import ClipNorm, ClipValue

DT = torch.float64


def _param_with_norm(norm: float, gen: torch.Generator) -> torch.Tensor:
    """A parameter whose gradient has exactly the given L2 norm (NaN/inf passed through)."""
    p = torch.zeros(6, dtype=DT, requires_grad=True)
    direction = torch.randn(6, generator=gen, dtype=DT)
    p.grad = direction / direction.norm() * norm if math.isfinite(norm) else direction * norm
    return p


# norm sequences: a smooth level with occasional spikes of 10-1000x
norm_sequences = st.lists(
    st.tuples(st.floats(0.5, 2.0), st.sampled_from([1.0] * 6 + [10.0, 100.0, 1000.0])).map(
        lambda pair: pair[0] * pair[1]
    ),
    min_size=1,
    max_size=60,
)


def _run(policy, norms, seed=0):
    """Feed a norm sequence; return thresholds and post-clip norms per step."""
    gen = torch.Generator().manual_seed(seed)
    thresholds, after = [], []
    for norm in norms:
        p = _param_with_norm(norm, gen)
        returned = policy([p])
        if math.isfinite(norm):
            assert math.isclose(returned.item(), norm, rel_tol=1e-12)
        thresholds.append(policy.threshold)
        after.append(p.grad.norm().item())
    return thresholds, after


@settings(max_examples=60, deadline=None)
@given(norms=norm_sequences, p=st.floats(1.0, 100.0), window=st.sampled_from([None, 1, 5, 20]))
def test_percentile_is_autoclip(norms, p, window):
    thresholds, after = _run(Percentile(p, history=window), norms)
    history = []
    for norm, thr, post in zip(norms, thresholds, after, strict=True):
        history.append(norm)  # the AutoClip code appends, then takes the percentile
        used = history if window is None else history[-window:]
        expected = np.percentile(used, p)  # numpy's default: linear interpolation
        assert math.isclose(thr, expected, rel_tol=1e-12)
        assert post <= max(expected, 0) * (1 + 1e-9) or post <= norm


def _zclip_reference(norms, z_thr, alpha, warmup, max_norm):
    """ZClip (zscore mode, adaptive scaling) from the paper, in plain floats."""
    buffer, mean, var, out = [], None, None, []
    for g in norms:
        cap = math.inf if max_norm is None else max_norm
        if mean is None:
            buffer.append(g)
            if len(buffer) >= warmup:
                mean = sum(buffer) / len(buffer)
                var = sum((x - mean) ** 2 for x in buffer) / len(buffer)
            out.append(cap)
            continue
        std = math.sqrt(var)
        z = (g - mean) / (std + 1e-6)
        tau = mean + z_thr * std / (z / z_thr) if z > z_thr else math.inf
        out.append(min(tau, cap))
        seen = tau if z > z_thr else g
        mean = alpha * mean + (1 - alpha) * seen
        var = alpha * var + (1 - alpha) * (seen - mean) ** 2
    return out


@settings(max_examples=60, deadline=None)
@given(
    norms=norm_sequences,
    z=st.floats(1.0, 4.0),
    alpha=st.floats(0.5, 0.99),
    warmup=st.integers(1, 10),
    max_norm=st.sampled_from([None, 5.0]),
)
def test_zscore_is_zclip(norms, z, alpha, warmup, max_norm):
    thresholds, after = _run(ZScore(z, alpha, warmup, max_norm), norms)
    expected = _zclip_reference(norms, z, alpha, warmup, max_norm)
    for thr, exp, post, norm in zip(thresholds, expected, after, norms, strict=True):
        if math.isinf(exp):
            assert math.isinf(thr)
        else:
            assert math.isclose(thr, exp, rel_tol=1e-9)
        assert post <= min(exp, norm) * (1 + 1e-9)


def test_calibrate_fixes_the_quantile_of_the_unclipped_steps(gen):
    norms = [1.0, 2.0, 3.0, 4.0, 100.0, 5.0, 500.0, 50.0]
    thresholds, after = _run(Calibrate(steps=5, quantile=0.9), norms)
    assert all(math.isinf(t) for t in thresholds[:5])
    assert after[:5] == pytest.approx(norms[:5])
    fixed = np.quantile(norms[:5], 0.9)  # 61.6
    assert all(math.isclose(t, fixed) for t in thresholds[5:])
    assert after[5:] == pytest.approx([5.0, fixed, 50.0], rel=1e-6)


def test_nonfinite_norms_stay_out_of_every_history():
    clean = [1.0, 2.0, 3.0, 50.0, 2.5, 1.5, 2.0, 40.0, 2.0]
    dirty = [*clean[:3], math.nan, *clean[3:6], math.inf, *clean[6:]]
    for make in (
        lambda: Percentile(30),
        lambda: Percentile(30, history=3),
        lambda: ZScore(2.0, 0.9, 3),
    ):
        ref, _ = _run(make(), clean)
        got, _ = _run(make(), dirty)
        got_finite = [t for t, n in zip(got, dirty, strict=True) if math.isfinite(n)]
        assert got_finite == pytest.approx(ref, rel=1e-12)
    # calibration counts calls: its first four hold a NaN, left out of the quantile
    got, _ = _run(Calibrate(4, 0.5), dirty)
    expected = [np.quantile(dirty[:3], 0.5)] * (len(dirty) - 4)
    assert got[4:] == pytest.approx(expected, rel=1e-12)


def test_per_parameter_percentile_keeps_one_history_per_tensor(gen):
    policy = Percentile(50, per_parameter=True)
    history = [[], []]
    for step in range(6):
        a = torch.zeros(3, dtype=DT, requires_grad=True)
        b = torch.zeros(4, dtype=DT, requires_grad=True)
        a.grad = torch.randn(3, generator=gen, dtype=DT) * (step + 1)
        b.grad = torch.randn(4, generator=gen, dtype=DT) * (10 if step == 3 else 1)
        before = [a.grad.clone(), b.grad.clone()]
        total = policy([a, b])
        torch.testing.assert_close(total, torch.stack([g.norm() for g in before]).norm())
        for k, g in enumerate(before):
            history[k].append(g.norm().item())
            thr = np.percentile(history[k], 50)
            assert math.isclose(policy.thresholds[k], thr, rel_tol=1e-12)
            expected = g * thr / max(g.norm().item(), thr)
            torch.testing.assert_close((a, b)[k].grad, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Percentile(20),
        lambda: Percentile(20, history=4),
        lambda: Percentile(50, per_parameter=True),
        lambda: ZScore(2.0, 0.9, 4, max_norm=20.0),
        lambda: Calibrate(5, 0.8),
        lambda: Fixed(2.0),
        lambda: NoClip(),
        lambda: AdaptiveClip(0.05),
    ],
)
def test_state_survives_a_save_and_a_safe_load(make):
    norms = [1.0, 2.0, 30.0, 1.5, 1.2, 0.9, 50.0, 1.1, 1.3, 2.2, 80.0, 1.0]
    first, resumed = make(), make()
    _run(first, norms[:6])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    a, _ = _run(first, norms[6:], seed=1)
    b, _ = _run(resumed, norms[6:], seed=1)
    assert a == b


def test_value_policy_reports_its_bound(gen):
    p = _param_with_norm(10.0, gen)
    policy = Value(0.1)
    norm = policy([p])
    assert math.isclose(norm.item(), 10.0) and p.grad.abs().max() <= 0.1
    assert policy.clipped and policy.threshold == 0.1


def test_per_step_holds_the_taps():
    policy = PerStep(max_norm=2.0, value=0.5)
    assert [type(t) for t in policy.taps] == [ClipValue, ClipNorm]
    with pytest.raises(ValueError, match="max_norm, value"):
        PerStep()


@pytest.mark.parametrize(
    "make",
    [
        lambda: Fixed(0),
        lambda: Fixed(math.nan),
        lambda: Percentile(0),
        lambda: Percentile(101),
        lambda: Percentile(10, history=0),
        lambda: ZScore(z=-1),
        lambda: ZScore(alpha=1.5),
        lambda: ZScore(warmup=0),
        lambda: Calibrate(steps=0),
        lambda: Calibrate(quantile=0),
        lambda: Value(-2),
        lambda: AdaptiveClip(0),
        lambda: AdaptiveClip(math.nan),
        lambda: AdaptiveClip(0.01, eps=0),
        lambda: AdaptiveClip(0.01, eps=-1e-3),
    ],
)
def test_bad_settings_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_calls_without_gradients_change_nothing():
    bare = torch.zeros(2, dtype=DT, requires_grad=True)
    for make in (
        lambda: Percentile(10),
        lambda: Calibrate(1),
        lambda: ZScore(warmup=2),
        lambda: AdaptiveClip(),
    ):
        policy, reference = make(), make()
        assert policy([bare]).item() == 0 and not policy.clipped
        assert math.isinf(policy.threshold)
        assert policy.state_dict().keys() == reference.state_dict().keys()
        assert _run(policy, [3.0, 4.0]) == _run(reference, [3.0, 4.0])
    assert Percentile(10, per_parameter=True)([bare]).item() == 0


def test_a_loaded_history_keeps_its_window():
    long, short = Percentile(50), Percentile(50, history=3)
    _run(long, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    short.load_state_dict(long.state_dict())
    thresholds, _ = _run(short, [100.0])
    assert thresholds == [np.percentile([5.0, 6.0, 100.0], 50)]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Fixed(1.0),
        lambda: Percentile(50.0),
        lambda: ZScore(2.5, 0.97, 1, max_norm=1.0),
        lambda: Percentile(50.0, per_parameter=True),
        lambda: AdaptiveClip(0.01),
    ],
)
def test_a_finite_gradient_whose_float32_norm_overflows_is_clipped_not_skipped(make, gen):
    # elements near 1e20: every one finite in float32, their squares (1e40) are not
    w = torch.zeros(6, requires_grad=True)
    v = torch.zeros(3, requires_grad=True)
    policy = make()
    for scale in (1.0, 2.0, 1.5):  # an ordinary history first (the adaptive policies)
        w.grad, v.grad = torch.full((6,), scale), torch.full((3,), scale)
        policy([w, v])
    big_w = torch.randn(6, generator=gen) * 1e20
    big_v = torch.randn(3, generator=gen) * 1e20
    w.grad, v.grad = big_w.clone(), big_v.clone()
    assert not math.isfinite(torch.linalg.vector_norm(torch.cat([big_w, big_v])).item())
    norm = policy([w, v])
    exact = torch.linalg.vector_norm(torch.cat([big_w, big_v]).double()).item()
    if not getattr(policy, "per_parameter", False):
        assert norm.item() == pytest.approx(exact, rel=1e-12)  # measured in float64
    assert policy.clipped and math.isfinite(policy.threshold)
    after = torch.cat([w.grad, v.grad])
    assert torch.isfinite(after).all()
    assert torch.linalg.vector_norm(after.double()).item() <= policy.threshold * (1 + 1e-6)
    # the direction is kept: the clipped gradient is a positive multiple of the original
    for clipped, original in ((w.grad, big_w), (v.grad, big_v)):
        ratio = clipped.double() / original.double()
        assert (ratio > 0).all() and (ratio.max() - ratio.min()) <= 1e-6 * ratio.max()


def test_a_norm_beyond_float32_is_clipped_even_when_subnormals_flush_to_zero():
    from bptt.precision import flush_denormal

    w = torch.zeros(1000, requires_grad=True)
    w.grad = torch.full((1000,), 1e37)  # norm 3.2e38: the coefficient 1/norm is subnormal
    with flush_denormal(True):
        Fixed(1.0)([w])
    assert torch.isfinite(w.grad).all() and (w.grad > 0).all()
    assert torch.linalg.vector_norm(w.grad.double()).item() == pytest.approx(1.0, rel=1e-5)


def test_adaptive_clip_is_the_function_and_reports_the_bounds_it_allowed(gen):
    weights = [torch.randn(4, 3, generator=gen, dtype=DT), torch.zeros(3, dtype=DT)]
    grads = [torch.randn(4, 3, generator=gen, dtype=DT), torch.randn(3, generator=gen, dtype=DT)]
    grads[0][2] *= 1e-4  # one unit well within its bound

    def params():
        made = [torch.nn.Parameter(w.clone()) for w in weights]
        for p, g in zip(made, grads, strict=True):
            p.grad = g.clone()
        return made

    policy, ours, reference = AdaptiveClip(0.1, eps=1e-2), params(), params()
    norm = policy(ours)
    expected = adaptive_clip_grad_(reference, 0.1, eps=1e-2)
    torch.testing.assert_close(norm, expected, rtol=0, atol=0)
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    bounds = [0.1 * max(row.norm().item(), 1e-2) for row in weights[0]] + [0.1 * 1e-2]
    assert policy.threshold == pytest.approx(math.hypot(*bounds), rel=1e-12)
    assert policy.clipped and policy.calls == 1
    assert norm.item() == pytest.approx(math.hypot(*(g.norm().item() for g in grads)), rel=1e-12)
    # everything within its bound: nothing clipped, nothing changed
    calm = AdaptiveClip(100.0, eps=1.0)
    kept = params()
    calm(kept)
    assert not calm.clipped
    assert all(torch.equal(p.grad, g) for p, g in zip(kept, grads, strict=True))
    with pytest.raises(NotImplementedError, match="each unit"):
        policy.decide(1.0)


def test_adaptive_clip_reports_a_nonfinite_gradient_as_not_clipped(gen):
    p = torch.nn.Parameter(torch.ones(2, 3, dtype=DT))
    p.grad = torch.randn(2, 3, generator=gen, dtype=DT) * 100
    p.grad[0, 1] = math.nan
    policy = AdaptiveClip(0.01)
    assert math.isnan(policy([p]).item()) and not policy.clipped
