"""Clipping functions against torch.nn.utils, and their invariants."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bptt.clip import (
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
