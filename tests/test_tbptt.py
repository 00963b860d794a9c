"""TBPTT(k1, k2) against the explicitly built truncated graph (float64)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bptt
import bptt.run
from helpers import CELL_KINDS, DT, make_cell, rounding_tol


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
    # Both sides agree to rounding (helpers.rounding_tol). A gradient: a window of k2 <= 13 steps
    # of F + H + 2 + 8 roundings forward and 4H + 9 backward, the B k2 products summed into it,
    # the readout: 600 roundings; its terms add up to < 1.2 over 60 draws of these arguments
    # (tanh/ReLU cells; the gates' derivatives are < 1), bounded here by 5: 6.7e-13.
    grad_atol = rounding_tol(600, 5.0)
    for ours, theirs in zip(got, expected, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=grad_atol)
    # Parameters: <= 40 SGD updates, each adding lr times a gradient's error and one rounding
    # of |p| < 1; a perturbation of the start grows by < 1.1 over such a run: 3e-12.
    param_atol = 1.1 * 40 * (0.1 * grad_atol + rounding_tol(1, 1.0))
    for a, b in zip(model.parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=param_atol)


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
    ("k1", "k2", "error", "message"),
    [(5, 3, ValueError, "k1 <= k2"), (0, 3, ValueError, "k1"), (2, 2.5, TypeError, "k2")],
)
def test_bad_truncations_are_refused(k1, k2, error, message):
    model = _model("rnn-tanh")
    with pytest.raises(error, match=message):
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


def test_the_echo_stream_continues_across_chunks():
    task = bptt.tasks.make_task("echo", 3)
    whole = task.open_stream(2, torch.Generator().manual_seed(5)).next(20)
    stream = task.open_stream(2, torch.Generator().manual_seed(5))
    parts = [stream.next(n) for n in (1, 7, 12)]
    x = torch.cat([p[0] for p in parts], 1)
    y = torch.cat([p[1] for p in parts], 1)
    # chunks draw the same symbols as one call only when the generator is consumed alike;
    # what must hold is the convention: each target is the input 3 steps back
    assert torch.equal(y[:, 3:], x[:, :-3].argmax(-1)) and (y[:, :3] == -100).all()
    assert torch.equal(whole[1][:, 3:], whole[0][:, :-3].argmax(-1))


def test_the_text_corpus_ships_with_python_and_has_a_test_part():
    task = bptt.tasks.make_task("text", 64)
    codes = task.codes()
    train, test = task._split()
    assert codes.shape[0] > 100_000 and test.shape[0] == codes.shape[0] - train.shape[0]
    assert 3.0 < task.baseline_loss < 5.5  # unigram entropy of Python source, bits/char
    x, y = task.open_stream(4, torch.Generator()).next(10)
    assert x.shape == (4, 10, 96) and torch.equal(x[:, 1:].argmax(-1), y[:, :-1])


def test_stream_training_records_k1_and_k2(tmp_path):
    config = {"task": "echo", "length": 2, "cell": "gru", "hidden": 8, "steps": 12}
    config.update({"tbptt_k1": 3, "tbptt_k2": 5, "batch_size": 4, "out": str(tmp_path)})
    result = bptt.train(config)
    assert (result.summary["tbptt_k1"], result.summary["tbptt_k2"]) == (3, 5)
    assert "tbptt_k1 = 3" in (tmp_path / "config.toml").read_text()
    assert "tbptt_k2 = 5" in (tmp_path / "config.toml").read_text()


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"task": "adding", "tbptt_k1": 4}, "tbptt_k1"),
        ({"task": "echo", "tbptt_k1": 8, "tbptt_k2": 4}, "tbptt_k1"),
    ],
)
def test_truncation_settings_are_checked(values, field):
    with pytest.raises(bptt.run.ConfigError) as info:
        bptt.TrainConfig.from_dict(values)
    assert info.value.field == field


def test_echo_is_learned_only_when_k2_reaches_the_delay():
    """The lecture's price of truncation, in small: d = 6 with k2 = 4 stays at chance,
    with k2 = 16 (same k1) it is learned."""
    base = {"task": "echo", "length": 6, "cell": "gru", "hidden": 32, "steps": 500}
    base.update({"lr": 2e-2, "batch_size": 32, "threads": 1, "monitor": False})
    short = bptt.train({**base, "tbptt_k1": 4, "tbptt_k2": 4}).summary["final_loss"]
    long = bptt.train({**base, "tbptt_k1": 4, "tbptt_k2": 16}).summary["final_loss"]
    baseline = bptt.tasks.make_task("echo", 6).baseline_loss
    assert short > 0.9 * baseline  # at chance
    assert long < 0.1 * baseline  # learned
