"""TBPTT(k1, k2) against the explicitly built truncated graph (float64)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bptt
from helpers import CELL_KINDS, DT, make_cell


def _model(kind: str) -> bptt.SequenceModel:
    torch.manual_seed(0)
    return bptt.SequenceModel(make_cell(kind, input_size=2, hidden_size=4), 2, readout="all")


def _plain_window(model, x, state, start, stop):
    """Steps start+1 .. stop with a plain autograd loop; all states and outputs."""
    outputs, states = [], {}
    for step in range(start + 1, stop + 1):
        state = model.cell(x[:, step - 1], state)
        states[step] = state
        outputs.append(state[0] if isinstance(state, tuple) else state)
    return torch.stack(outputs, 1), states


def _reference(model, x, y, k1, k2, lr):
    """Per update: the gradients of the truncated graph built by hand, then SGD."""
    detach = lambda s: tuple(p.detach() for p in s) if isinstance(s, tuple) else s.detach()  # noqa: E731
    stored, grads = {0: None}, []
    params = list(model.parameters())
    for t in range(k1, x.shape[1] + 1, k1):
        start = max(0, t - k2)
        outputs, states = _plain_window(model, x, stored[start], start, t)
        loss = nn.functional.mse_loss(model.head(outputs[:, -k1:]), y[:, t - k1 : t])
        grads.append(torch.autograd.grad(loss, params))
        with torch.no_grad():
            for p, g in zip(params, grads[-1], strict=True):
                p -= lr * g
        following = t + k1 - k2
        if following > 0:
            stored[following] = detach(states[following])
    return grads


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(CELL_KINDS),
    k1=st.integers(1, 6),
    extra=st.integers(0, 7),
    steps=st.integers(1, 40),
    chunks=st.lists(st.integers(1, 9), min_size=1, max_size=12),
    seed=st.integers(0, 1000),
)
def test_every_update_equals_the_explicit_truncated_graph(kind, k1, extra, steps, chunks, seed):
    k2 = k1 + extra
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, steps, 2, generator=gen, dtype=DT)
    y = torch.randn(3, steps, 2, generator=gen, dtype=DT)
    model = _model(kind)
    reference_model = copy.deepcopy(model)
    expected = _reference(reference_model, x, y, k1, k2, lr=0.1)

    got = []
    record = lambda params: got.append([p.grad.clone() for p in params])  # noqa: E731
    trainer = bptt.TBPTT(
        model,
        k1,
        k2,
        nn.functional.mse_loss,
        torch.optim.SGD(model.parameters(), lr=0.1),
        clip=record,
    )
    position = 0
    for size in chunks * (steps // max(1, sum(chunks)) + 1):  # the stream in chunks of any size
        if position >= steps:
            break
        trainer.step(x[:, position : position + size], y[:, position : position + size])
        position += size
    assert trainer.position == steps and trainer.updates == len(expected) == steps // k1
    for ours, theirs in zip(got, expected, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(model.parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_memory_holds_only_the_last_window():
    model = _model("gru")
    trainer = bptt.TBPTT(
        model, 4, 10, nn.functional.mse_loss, torch.optim.SGD(model.parameters(), lr=0.01)
    )
    for _ in range(50):
        chunk = torch.randn(3, 7, 2, dtype=DT)
        trainer.step(chunk, chunk)
        assert trainer._x.shape[1] <= 10 + 7 and trainer._y.shape[1] <= 4 + 7
    assert trainer.position == 350 and trainer.updates == 87


def test_taps_see_window_steps_and_clip_per_step():
    model = _model("lstm")
    record = bptt.taps.RecordNorms()
    trainer = bptt.TBPTT(
        model,
        3,
        7,
        nn.functional.mse_loss,
        torch.optim.SGD(model.parameters(), lr=0.01),
        taps=[record, bptt.taps.ClipNorm(1e-3)],
    )
    x = torch.randn(2, 12, 2, dtype=DT)
    rows = trainer.fit(x, x)
    assert [r["window"] for r in rows] == [3, 6, 7, 7]
    assert record.norms.shape == (2, 7) and torch.isfinite(record.norms).all()


@pytest.mark.parametrize(
    ("k1", "k2", "message"), [(5, 3, "k1 <= k2"), (0, 3, "k1"), (2, 2.5, "k2")]
)
def test_bad_truncations_are_refused(k1, k2, message):
    model = _model("rnn-tanh")
    with pytest.raises(ValueError, match=message):
        bptt.TBPTT(model, k1, k2, nn.functional.mse_loss, torch.optim.SGD(model.parameters(), 0.1))


def test_models_and_chunks_of_the_wrong_shape_are_refused():
    last = bptt.SequenceModel(make_cell("gru", 2, 4), 2)
    with pytest.raises(ValueError, match="readout='all'"):
        bptt.TBPTT(last, 2, 2, nn.functional.mse_loss, torch.optim.SGD(last.parameters(), 0.1))
    model = _model("gru")
    trainer = bptt.TBPTT(
        model, 2, 2, nn.functional.mse_loss, torch.optim.SGD(model.parameters(), 0.1)
    )
    with pytest.raises(ValueError, match="y_chunk"):
        trainer.step(torch.zeros(3, 4, 2, dtype=DT), torch.zeros(3, 5, 2, dtype=DT))
    trainer.step(torch.zeros(3, 4, 2, dtype=DT), torch.zeros(3, 4, 2, dtype=DT))
    with pytest.raises(ValueError, match="parallel"):
        trainer.step(torch.zeros(2, 4, 2, dtype=DT), torch.zeros(2, 4, 2, dtype=DT))
