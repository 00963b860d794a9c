"""Taps on their own: clipping invariants (hypothesis) and argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bptt.taps import ClipNorm, ClipValue, RecordNorms, per_sample_norm

deltas = st.builds(
    lambda seed, batch, hidden, scale: (
        torch.randn(
            batch, hidden, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )
        * scale
    ),
    st.integers(0, 10_000),
    st.integers(1, 6),
    st.integers(1, 9),
    st.floats(1e-6, 1e6),
)


@settings(max_examples=60, deadline=None)
@given(delta=deltas, max_norm=st.floats(1e-3, 1e3))
def test_clip_norm_bounds_keeps_direction_and_is_idempotent(delta, max_norm):
    clip = ClipNorm(max_norm)
    once = clip(0, delta)
    norms_before, norms_after = per_sample_norm(delta), per_sample_norm(once)
    assert (norms_after <= max_norm * (1 + 1e-9)).all()
    small = norms_before <= max_norm
    assert torch.equal(once[small], delta[small])
    cosine = (once * delta).sum(1) / (norms_after * norms_before)
    torch.testing.assert_close(cosine, torch.ones_like(cosine), rtol=0, atol=1e-12)
    torch.testing.assert_close(clip(0, once), once, rtol=1e-14, atol=0)


@settings(max_examples=40, deadline=None)
@given(delta=deltas, value=st.floats(1e-3, 1e3))
def test_clip_value_bounds_and_is_idempotent(delta, value):
    clip = ClipValue(value)
    once = clip(0, delta)
    assert once.abs().max() <= value
    assert torch.equal(clip(0, once), once)
    inside = delta.abs() <= value
    assert torch.equal(once[inside], delta[inside])


def test_tuple_norm_covers_every_component():
    h = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    c = torch.tensor([[0.0, 4.0], [1.0, 0.0]])
    expected = torch.tensor([5.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(per_sample_norm((h, c)), expected)
    clipped = ClipNorm(2.5)(0, (h, c))
    assert clipped[0].dtype == torch.float32  # the gradient keeps its dtype
    expected = torch.tensor([2.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(per_sample_norm(clipped), expected, atol=1e-6, rtol=0)


def test_norms_of_huge_and_tiny_float32_gradients_are_exact():
    """Where float32 squares overflow (inf) or underflow (0), the float64 norm is right."""
    for value in (1e30, 1e-30, 1e-42):  # the last is subnormal
        delta = torch.full((2, 16), value)
        torch.testing.assert_close(
            per_sample_norm(delta), torch.full((2,), 4 * float(delta[0, 0]), dtype=torch.float64)
        )
    huge = torch.full((1, 4), 1e30)
    torch.testing.assert_close(ClipNorm(1.0)(0, huge), torch.full((1, 4), 0.5))  # not zeroed


def test_clip_norm_never_hides_a_nonfinite_gradient():
    delta = torch.tensor([[math.nan, 1.0], [math.inf, 0.0], [1.0, 1.0]])
    out = ClipNorm(1.0)(0, delta)
    assert not torch.isfinite(out[0]).all() and not torch.isfinite(out[1]).all()
    assert torch.isfinite(out[2]).all()


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: ClipNorm(0.0), ValueError),
        (lambda: ClipNorm(-1.0), ValueError),
        (lambda: ClipNorm(math.inf), ValueError),
        (lambda: ClipNorm(math.nan), ValueError),
        (lambda: ClipValue(0), ValueError),
        (lambda: ClipNorm("1"), TypeError),
        (lambda: ClipValue(True), TypeError),
    ],
)
def test_bad_bounds_are_rejected(make, error):
    with pytest.raises(error):
        make()


def test_record_norms_needs_begin():
    with pytest.raises(RuntimeError, match="begin"):
        RecordNorms()(0, torch.zeros(1, 2))
