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


@pytest.mark.parametrize("bits", [2, 3])
def test_temporal_order_marks_its_windows_and_encodes_the_order(bits):
    from bptt.tasks import temporal_order

    x, y = temporal_order(50, 200, bits=bits, seed=0)
    symbols = x.argmax(-1)  # 0/1 = A/B, 2..5 distractors
    starts = (5, 25) if bits == 2 else (5, 15, 30)
    code = torch.zeros(200, dtype=torch.long)
    for k, start in enumerate(starts):
        window = symbols[:, start : start + 5]
        assert ((window < 2).sum(1) == 1).all()
        code += window[window < 2].view(200) << k
    assert ((symbols < 2).sum(1) == bits).all()
    assert torch.equal(code, y)


def test_multiplication_xor_permutation_memorization_conventions():
    from bptt.tasks import memorization, multiplication, random_permutation, xor_problem

    x, y = multiplication(40, 64, seed=1, dtype=torch.float64)
    marked = x[..., 0] == 1
    assert (marked.sum(1) == 2).all() and (marked[:, :4].sum(1) == 1).all()
    torch.testing.assert_close(y[:, 0], x[..., 1].where(marked, 1.0).prod(1))
    x, y = xor_problem(10, 64, seed=2)
    bits = x[..., 0][x[..., 1] == 1].view(64, 2).long()
    assert torch.equal(y, bits[:, 0] ^ bits[:, 1])
    x, y = random_permutation(12, 64, seed=3)
    assert torch.equal(x[:, 0].argmax(-1), y) and (x[:, 1:].argmax(-1) >= 2).all()
    x, y = memorization(15, 8, seed=4)
    assert x.shape == (8, 35, 7) and (x[:, 25].argmax(-1) == 6).all()
    assert torch.equal(y[:, -10:], x[:, :10].argmax(-1)) and (y[:, :25] == 5).all()


@pytest.mark.parametrize("name", ["order", "order3", "xor", "permutation", "multiplication"])
def test_baselines_are_the_best_blind_predictors(name):
    task = make_task(name, 30)
    _, y = task.sample(20_000, torch.Generator().manual_seed(0))
    if name == "multiplication":
        blind = torch.full_like(y, 0.25)
    else:
        counts = torch.bincount(y, minlength=task.output_size).double()
        blind = (counts / counts.sum()).log().float().expand(y.shape[0], -1)
    assert task.loss(blind, y).item() == pytest.approx(task.baseline_loss, rel=0.03)


def test_digits_split_and_permutation():
    digits, permuted = make_task("digits", 64), make_task("pdigits", 64)
    x, y = digits.test_set(0, torch.Generator())
    px, py = permuted.test_set(0, torch.Generator())
    assert x.shape == (360, 64, 1) and torch.equal(y, py)
    assert torch.equal(px[..., 0], x[..., 0][:, permuted.order]) and not torch.equal(px, x)
    assert 0 <= x.min() and x.max() <= 1
    with pytest.raises(ValueError, match="64"):
        make_task("digits", 32)
