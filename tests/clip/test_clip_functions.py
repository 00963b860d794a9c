"""Clipping functions against torch.nn.utils, and their invariants."""

from __future__ import annotations

import copy
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bptt.clip import (
    adaptive_clip_grad_,
    clip_grad_norm_,
    clip_grad_norm_per_parameter_,
    clip_grad_value_,
    get_total_norm,
)

DT = torch.float64


def _params(gen, shapes, scale=1.0, none_at=()):
    params = []
    for k, shape in enumerate(shapes):
        p = torch.zeros(shape, dtype=DT, requires_grad=True)
        if k not in none_at:
            p.grad = torch.randn(shape, generator=gen, dtype=DT) * scale
        params.append(p)
    return params


SHAPES = [(3, 4), (5,), (2, 2, 2), ()]


@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf, 3.5])
@pytest.mark.parametrize("foreach", [None, True, False])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(norm_type, foreach, max_norm, gen):
    ours = _params(gen, SHAPES, scale=3.0, none_at=(1,))
    theirs = copy.deepcopy(ours)
    n_ours = clip_grad_norm_(ours, max_norm, norm_type, foreach=foreach)
    n_theirs = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type, foreach=foreach)
    # exact on any CPU: both call the same torch kernels (_foreach_norm or vector_norm, stack,
    # vector_norm, clamp, _foreach_mul_ or mul_) on the same tensors in the same order
    torch.testing.assert_close(n_ours, n_theirs, rtol=0, atol=0)
    for a, b in zip(ours, theirs, strict=True):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


def test_empty_and_single_tensor_inputs_match_torch(gen):
    assert clip_grad_norm_([], 1.0) == torch.nn.utils.clip_grad_norm_([], 1.0) == 0
    (single,) = _params(gen, [(4, 3)], scale=5.0)
    twin = copy.deepcopy(single)
    torch.testing.assert_close(
        clip_grad_norm_(single, 1.0), torch.nn.utils.clip_grad_norm_(twin, 1.0)
    )
    torch.testing.assert_close(single.grad, twin.grad, rtol=0, atol=0)
    clip_grad_value_([], 1.0)  # nothing to do, no error


@pytest.mark.parametrize("foreach", [None, True, False])
def test_clip_grad_value_matches_torch(foreach, gen):
    ours = _params(gen, SHAPES, scale=3.0, none_at=(2,))
    theirs = copy.deepcopy(ours)
    clip_grad_value_(ours, 0.7, foreach=foreach)
    torch.nn.utils.clip_grad_value_(theirs, 0.7, foreach=foreach)
    for a, b in zip(ours, theirs, strict=True):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


def test_nonfinite_norm_raises_only_when_asked(gen):
    params = _params(gen, SHAPES)
    params[0].grad[0, 0] = math.nan
    with pytest.raises(RuntimeError, match="error_if_nonfinite=False"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    assert torch.isnan(clip_grad_norm_(params, 1.0))


def test_tensor_threshold_and_infinite_threshold(gen):
    params = _params(gen, SHAPES, scale=3.0)
    before = [p.grad.clone() for p in params]
    clip_grad_norm_(params, torch.tensor(math.inf, dtype=DT))
    assert all(torch.equal(p.grad, b) for p, b in zip(params, before, strict=True))
    clip_grad_norm_(params, torch.tensor(0.25, dtype=DT))
    assert get_total_norm([p.grad for p in params]) <= 0.25


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(1e-4, 1e4),
    max_norm=st.floats(1e-3, 1e3),
    norm_type=st.sampled_from([1.0, 2.0, math.inf]),
)
def test_after_clipping_the_norm_is_bounded_and_clipping_twice_changes_nothing(
    seed, scale, max_norm, norm_type
):
    params = _params(torch.Generator().manual_seed(seed), SHAPES, scale=scale)
    clip_grad_norm_(params, max_norm, norm_type)
    after = get_total_norm([p.grad for p in params], norm_type)
    assert after <= max_norm * (1 + 1e-9)
    once = [p.grad.clone() for p in params]
    clip_grad_norm_(params, max_norm, norm_type)
    for p, g in zip(params, once, strict=True):
        # the 1e-6 in torch's coefficient moves a clipped gradient by at most 1e-6 / max_norm
        torch.testing.assert_close(p.grad, g, rtol=2e-6 / max_norm + 1e-12, atol=0)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-3, 1e3), bound=st.floats(1e-2, 1e2))
def test_per_parameter_clipping_is_kerass_clipnorm(seed, scale, bound):
    params = _params(torch.Generator().manual_seed(seed), SHAPES[:3], scale=scale)
    before = [p.grad.clone() for p in params]
    norms = clip_grad_norm_per_parameter_(params, bound)
    for p, g, n in zip(params, before, norms, strict=True):
        expected = g * bound / max(g.norm().item(), bound)  # tf.clip_by_norm
        torch.testing.assert_close(n, g.norm(), rtol=1e-12, atol=0)
        torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-300)
        assert p.grad.norm() <= bound * (1 + 1e-12)
        if g.norm() <= bound:
            assert torch.equal(p.grad, g)


def test_per_parameter_clipping_with_an_infinite_bound_changes_nothing(gen):
    params = _params(gen, SHAPES[:2], scale=3.0)
    before = [p.grad.clone() for p in params]
    clip_grad_norm_per_parameter_(params, math.inf)
    assert all(torch.equal(p.grad, b) for p, b in zip(params, before, strict=True))


# --- adaptive gradient clipping (AGC) ------------------------------------------------------


def _timm_adaptive_clip_grad():
    """timm's ``adaptive_clip_grad``, loaded from its one file: ``import timm`` needs
    torchvision, which the set-up leaves out (the Makefile installs timm --no-deps)."""
    spec = importlib.util.find_spec("timm")  # finds the package without importing it
    assert spec is not None and spec.submodule_search_locations, (
        "timm (the AGC reference) is not installed: `make test` installs it, or run "
        "pip install --no-deps timm==1.0.31"
    )
    path = Path(spec.submodule_search_locations[0]) / "utils" / "agc.py"
    module_spec = importlib.util.spec_from_file_location("timm_agc_reference", path)
    assert module_spec is not None and module_spec.loader is not None, path
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.adaptive_clip_grad


timm_adaptive_clip_grad = _timm_adaptive_clip_grad()

# a Linear weight, a bias, a 3-d and a conv-like 4-d kernel, a scalar gain, a column
AGC_SHAPES = [(6, 4), (4,), (3, 2, 5), (5, 3, 2, 2), (), (5, 1)]


def _weights_and_grads(gen, dtype, shapes=AGC_SHAPES):
    """Parameters whose units' gradient-to-weight ratios spread over 1e-3..1e2, some
    weights zero (where eps decides the bound)."""
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=DT))
        rows = shape[0] if len(shape) > 1 else 1
        ratio = 10 ** torch.empty(rows, dtype=DT).uniform_(-3, 2, generator=gen)
        scale = ratio.reshape(-1, *[1] * (len(shape) - 1)) if len(shape) > 1 else ratio[0]
        g = torch.randn(shape, generator=gen, dtype=DT) * scale
        if len(shape) > 1:
            p.data[0] = 0.0  # a zero-initialised unit
        elif len(shape) == 1:
            p.data.zero_()  # a zero bias
        p.grad = g
        params.append(p)
    return [_cast(p, dtype) for p in params]


def _cast(p, dtype):
    q = torch.nn.Parameter(p.detach().to(dtype))
    q.grad = p.grad.to(dtype)
    return q


def _twins(params):
    twins = []
    for p in params:
        q = torch.nn.Parameter(p.detach().clone())
        q.grad = p.grad.clone()
        twins.append(q)
    return twins


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf, 3.5])
@pytest.mark.parametrize("clipping", [0.01, 0.1, 1.0])
def test_adaptive_clipping_is_timms(dtype, norm_type, clipping, gen):
    ours = _weights_and_grads(gen, dtype)
    theirs, before = _twins(ours), [p.grad.clone() for p in ours]
    total = adaptive_clip_grad_(ours, clipping, eps=1e-3, norm_type=norm_type)
    timm_adaptive_clip_grad(theirs, clip_factor=clipping, eps=1e-3, norm_type=norm_type)
    # exact: the same torch kernels on the same tensors (vector_norm over the same dims,
    # clamp, multiply, one division and one product per clipped unit)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    changed = [
        not torch.equal(after, was)
        for p, g in zip(ours, before, strict=True)
        for after, was in zip(_units(p.grad), _units(g), strict=True)
    ]
    if clipping == 0.1:  # the spread of ratios makes this one both clip and keep units
        assert any(changed) and not all(changed)
    expected = torch.nn.utils.get_total_norm(before, norm_type)  # before clipping
    rtol = 1e-12 if dtype == torch.float64 else 1e-5  # sums in another order
    torch.testing.assert_close(total, expected, rtol=rtol, atol=0)


def _units(x):
    return [x] if x.dim() <= 1 else list(x)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    clipping=st.floats(1e-3, 10.0),
    eps=st.floats(1e-6, 1.0),
    norm_type=st.sampled_from([1.0, 2.0, math.inf]),
)
def test_adaptive_clipping_bounds_each_unit_by_its_weights_and_twice_is_once(
    seed, clipping, eps, norm_type
):
    params = _weights_and_grads(torch.Generator().manual_seed(seed), DT)
    before = [p.grad.clone() for p in params]
    adaptive_clip_grad_(params, clipping, eps, norm_type)
    for p, g in zip(params, before, strict=True):
        for w_u, g_u, was in zip(_units(p.detach()), _units(p.grad), _units(g), strict=True):
            bound = clipping * max(torch.linalg.vector_norm(w_u, norm_type).item(), eps)
            norm = torch.linalg.vector_norm(was, norm_type).item()
            if norm <= bound:
                assert torch.equal(g_u, was)  # within its bound: untouched
            else:  # scaled down to the bound, direction kept
                after = torch.linalg.vector_norm(g_u, norm_type).item()
                assert after == pytest.approx(bound, rel=1e-12)
                torch.testing.assert_close(g_u, was * (bound / norm), rtol=1e-12, atol=0)
    once = [p.grad.clone() for p in params]
    adaptive_clip_grad_(params, clipping, eps, norm_type)
    for p, g in zip(params, once, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-12, atol=0)


def test_adaptive_clipping_lets_zero_weights_move_by_eps():
    w = torch.nn.Parameter(torch.zeros(3, 2, dtype=DT))
    w.grad = torch.ones(3, 2, dtype=DT)
    adaptive_clip_grad_(w, clipping=0.5, eps=1e-2)
    assert torch.linalg.vector_norm(w.grad, dim=1).tolist() == pytest.approx([5e-3] * 3)


def test_a_float32_unit_whose_norm_overflows_is_clipped_not_zeroed(gen):
    w = torch.nn.Parameter(torch.randn(3, 4, generator=gen))
    big = torch.randn(3, 4, generator=gen)
    big[1] *= 1e20  # finite float32 elements whose squares are not
    w.grad = big.clone()
    total = adaptive_clip_grad_(w, 0.1)
    assert math.isfinite(total.item())
    assert total.item() == pytest.approx(big.double().norm().item(), rel=1e-6)
    assert torch.isfinite(w.grad).all() and (w.grad[1] != 0).all()
    bound = 0.1 * w.detach()[1].double().norm().item()
    assert w.grad[1].double().norm().item() == pytest.approx(bound, rel=1e-6)
    ratio = w.grad[1].double() / big[1].double()  # the direction is kept
    assert (ratio > 0).all() and (ratio.max() - ratio.min()) <= 1e-6 * ratio.max()


def test_adaptive_clipping_without_gradients_does_nothing():
    bare = torch.nn.Parameter(torch.ones(2, 2, dtype=DT))
    empty = torch.nn.Parameter(torch.zeros(3, 0, dtype=DT))
    empty.grad = torch.zeros(3, 0, dtype=DT)
    assert adaptive_clip_grad_([bare, empty], 0.01, norm_type=math.inf).item() == 0
    assert adaptive_clip_grad_([], 0.01).item() == 0 and bare.grad is None


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"clipping": 0.0}, ValueError, "clipping"),
        ({"clipping": -0.1}, ValueError, "clipping"),
        ({"clipping": math.nan}, ValueError, "clipping"),
        ({"clipping": "0.01"}, TypeError, "clipping"),
        ({"eps": 0.0}, ValueError, "eps"),
        ({"eps": math.inf}, ValueError, "eps"),
        ({"norm_type": 0.0}, ValueError, "norm_type"),
        ({"parameters": 3}, TypeError, "parameters"),
    ],
)
def test_adaptive_clipping_refuses_bad_settings_by_name(kwargs, error, name, gen):
    params = _weights_and_grads(gen, DT, shapes=[(2, 3)])
    before = params[0].grad.clone()
    call = {"parameters": params, "clipping": 0.01, **kwargs}
    with pytest.raises(error, match=name):
        adaptive_clip_grad_(**call)
    assert torch.equal(params[0].grad, before)
