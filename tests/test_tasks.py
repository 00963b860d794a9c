"""Task generators: their conventions, baselines and success rules."""

from __future__ import annotations

import math

import pytest
import torch

from bptt.tasks import AddingTask, CopyTask, adding_problem, copy_memory, make_task


@pytest.mark.parametrize("length", [2, 3, 10, 51])
def test_adding_has_one_marker_in_each_half_and_sums_them(length):
    x, y = adding_problem(length, 256, seed=3, dtype=torch.float64)
    assert x.shape == (256, length, 2) and y.shape == (256, 1)
    markers, values = x[..., 1], x[..., 0]
    half = length // 2
    assert torch.equal(markers[:, :half].sum(1), torch.ones(256, dtype=torch.float64))
    assert torch.equal(markers[:, half:].sum(1), torch.ones(256, dtype=torch.float64))
    assert ((values >= 0) & (values <= 1)).all()
    torch.testing.assert_close(y[:, 0], (values * markers).sum(1), rtol=0, atol=1e-15)


def test_adding_baseline_is_the_variance_of_the_sum():
    task = AddingTask(20)
    _, y = adding_problem(20, 200_000, seed=0, dtype=torch.float64)
    constant = task.loss(torch.ones_like(y), y).item()
    assert math.isclose(task.baseline_loss, 1 / 6)
    assert abs(constant - task.baseline_loss) < 0.003
    assert task.is_solved(0.0099) and not task.is_solved(0.01)


def test_generators_are_seeded_and_streams_continue():
    a = adding_problem(10, 4, seed=1)
    b = adding_problem(10, 4, seed=1)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    gen = torch.Generator().manual_seed(1)
    first = adding_problem(10, 4, generator=gen)
    second = adding_problem(10, 4, generator=gen)
    assert torch.equal(first[0], a[0]) and not torch.equal(second[0], a[0])
    with pytest.raises(ValueError, match="not both"):
        adding_problem(10, 4, seed=1, generator=gen)


@pytest.mark.parametrize("length", [1, 5, 100])
def test_copy_layout(length):
    x, y = copy_memory(length, 64, seed=0)
    steps = length + 20
    assert x.shape == (64, steps, 10) and y.shape == (64, steps) and y.dtype == torch.long
    tokens = x.argmax(-1)
    assert torch.equal(x.sum(-1), torch.ones(64, steps))  # one-hot
    assert ((tokens[:, :10] >= 1) & (tokens[:, :10] <= 8)).all()
    assert (tokens[:, 10 + length - 1] == 9).all()
    others = torch.ones(steps, dtype=torch.bool)
    others[:10] = False
    others[10 + length - 1] = False
    assert (tokens[:, others] == 0).all()
    assert (y[:, : length + 10] == 0).all()
    assert torch.equal(y[:, -10:], tokens[:, :10])


@pytest.mark.parametrize("length", [1, 50, 100])
def test_copy_baseline_is_the_loss_of_the_best_blind_predictor(length):
    task = CopyTask(length)
    _, y = copy_memory(length, 32, seed=0)
    steps = length + 20
    logits = torch.full((32, steps, 9), -1e9, dtype=torch.float64)
    logits[:, : length + 10, 0] = 0.0  # certain blank
    logits[:, length + 10 :, 1:] = 0.0  # uniform over the 8 symbols
    loss = task.loss(logits, y).item()
    assert math.isclose(loss, 10 * math.log(8) / steps, rel_tol=1e-12)
    assert math.isclose(task.baseline_loss, loss, rel_tol=1e-12)
    assert task.is_solved(0.0099 * loss) and not task.is_solved(0.0101 * loss)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: adding_problem(1), "length"),
        (lambda: copy_memory(0), "length"),
        (lambda: adding_problem(5, 0), "batch_size"),
        (lambda: make_task("parity", 5), "unknown task"),
    ],
)
def test_bad_arguments_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
