"""Initialisers' properties and the cells that keep gradients alive."""

from __future__ import annotations

import math

import pytest
import torch

import bptt
from bptt import init
from bptt.diagnose import gradient_by_distance
from bptt.run import TrainConfig, build_model
from bptt.tasks import make_task
from helpers import DT, grads_of, loss_of, plain_loop, rounding_tol


def test_orthogonal_and_identity_blocks(gen):
    w = init.orthogonal_(torch.empty(3 * 6, 6, dtype=DT), generator=gen)
    for block in w.view(3, 6, 6):
        assert torch.linalg.matrix_norm(block.T @ block - torch.eye(6, dtype=DT)) < 1e-6
    eye = init.identity_(torch.empty(8, 4), scale=0.5)
    assert torch.equal(eye, 0.5 * torch.eye(4).repeat(2, 1))
    with pytest.raises(ValueError, match="shape"):
        init.orthogonal_(torch.empty(5, 3))


@pytest.mark.parametrize("rho", [0.5, 1.0, 1.5])
def test_spectral_radius_is_exact(rho, gen):
    w = init.spectral_radius_(torch.randn(16, 16, generator=gen, dtype=DT), rho)
    assert abs(init.spectral_radius(w) - rho) < 1e-6
    reservoir = init.sparse_reservoir_(torch.empty(64, 64), density=0.1, rho=rho, generator=gen)
    # float32 entries (and the float32 factor rho / current) move the radius by at most
    # kappa(lambda) eps32 / 2 || |W| ||_2 + eps32 / 2 rho = 2.2 * 6e-8 * 3.9 + 9e-8 = 6e-7 at rho
    # = 1.5 (kappa(lambda) = 2.2: this seeded draw, the same on every CPU); measured 5e-8.
    assert abs(init.spectral_radius(reservoir) - rho) < 1e-6
    assert 0.05 < (reservoir != 0).float().mean() < 0.15


def test_forget_bias_and_chrono(gen):
    lstm = bptt.cells.LSTMCell(2, 16, dtype=DT)
    init.forget_bias_(lstm, 1.0)
    assert torch.equal(lstm.bias_ih[16:32], torch.ones(16, dtype=DT))
    assert torch.equal(lstm.bias_hh[16:32], torch.zeros(16, dtype=DT))
    init.chrono_(lstm, 100, generator=gen)
    forget, inputs = lstm.bias_ih[16:32], lstm.bias_ih[:16]
    assert (forget >= 0).all() and (forget <= math.log(99)).all()
    assert torch.equal(inputs, -forget) and lstm.bias_hh[:32].abs().sum() == 0
    gru = init.chrono_(bptt.cells.GRUCell(2, 8), 50, generator=gen)
    assert (gru.bias_ih[8:16] <= math.log(49)).all() and (gru.bias_ih[8:16] >= 0).all()
    with pytest.raises(ValueError, match="gate"):
        init.forget_bias_(bptt.cells.RNNCell(2, 4))


def test_orthogonal_rnn_stays_orthogonal_through_training(gen):
    cell = bptt.cells.OrthogonalRNNCell(2, 16)
    model = bptt.SequenceModel(cell, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        x, y = bptt.tasks.adding_problem(20, 16, generator=gen)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x)[0], y).backward()
        opt.step()
    w = cell.weight_hh.detach().double()
    # W = exp(A - A^T) in float32: torch scales A - A^T by 2^-s to a 1-norm <= 3.01, evaluates a
    # degree-18 polynomial (<= 6 products of H-term sums) and squares s times, each squaring
    # doubling the error: ||E||_F < 2^s (6 + s) H eps32 ||W||_F, ||W||_F = sqrt(H); W^T W - I
    # = W^T E + E^T W + E^T E is within twice that: 4.9e-4 at s = 2 (measured 3e-6 to 7e-6 over
    # seeds, the trajectory itself varying with the CPU); an unconstrained W reaches ~15 here.
    skew_norm = torch.linalg.matrix_norm((cell.skew - cell.skew.t()).detach().double(), 1)
    s = max(0, math.ceil(math.log2(skew_norm.item() / 3.01)))
    bound = rounding_tol(2**s * (6 + s) * 16, 2 * math.sqrt(16), torch.float32)
    assert torch.linalg.matrix_norm(w.T @ w - torch.eye(16, dtype=DT)) < bound
    assert cell.skew.abs().sum() > 0  # it did move


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "modrelu"])
def test_orthogonal_rnn_engines_agree(nonlinearity, gen):
    cell = bptt.cells.OrthogonalRNNCell(3, 5, nonlinearity, dtype=DT)
    x = torch.randn(4, 9, 3, generator=gen, dtype=DT, requires_grad=True)
    w = torch.randn(4, 9, 5, generator=gen, dtype=DT)
    results = []
    for engine in ("plain", "auto"):
        cell.zero_grad()
        x.grad = None
        out, final = plain_loop(cell, x) if engine == "plain" else bptt.unroll(cell, x)
        loss_of(out, final, w).backward()
        results.append((out.detach(), grads_of(cell, x)))
    # The engines agree to rounding (helpers.rounding_tol). Outputs: T = 9 steps of F + H + 2
    # terms and at most 8 more roundings, terms adding up to < 4 here (< 10), each step's error
    # carried on with a factor <= 1 (||W|| = 1, f' <= 1): 3.6e-13, inside 1e-12.
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-12)
    # Gradients: that forward, T backward steps of H-term sums and 9 more roundings, the B T = 36
    # products summed into dL/dW (terms adding up to < 100: 17-82 here), then the exponential's
    # adjoint (one call on the sum, or T calls summed; norm <= 1 at a skew matrix, from a 2H x 2H
    # exponential of <= 6 products and s <= 7 squarings (4-7 here), 2H roundings each; the
    # scaling by 2^-s and the squarings cancel in the error relative to dL/dW); A - A^T doubles it.
    ops = 9 * (3 + 5 + 2 + 8) + 9 * (5 + 9) + 4 * 9 + 2 * 5 * 13
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=rounding_tol(ops, 2 * 100.0))  # 2e-11


def test_skip_rnn_reaches_back_through_its_shortcut(gen):
    cell = bptt.cells.SkipRNNCell(1, 4, skips=(1, 3), dtype=DT)
    with torch.no_grad():
        cell.weight_skips[0].zero_()  # only the shortcut from 3 steps back
    x = torch.randn(2, 7, 1, generator=gen, dtype=DT, requires_grad=True)
    out, _ = bptt.unroll(cell, x)
    out[:, -1].sum().backward()
    reached = x.grad[0, :, 0].abs() > 0
    assert reached.tolist() == [True, False, False, True, False, False, True]
    with pytest.raises(ValueError, match="distinct"):
        bptt.cells.SkipRNNCell(1, 4, skips=(2, 2))


def test_at_initialisation_the_remedies_reach_200_steps_back():
    """Gradient at distance 199 on adding T=200: orders of magnitude above the tanh RNN's."""
    task = make_task("adding", 200)
    x, _ = task.sample(32, torch.Generator().manual_seed(0))
    reach = {}
    for method in ("rnn", "irnn", "orthogonal", "skip"):
        torch.manual_seed(0)
        model = build_model(TrainConfig.from_dict({"method": method, "length": 200}), task)
        reach[method] = gradient_by_distance(model, x)["norms"][199].item()
    for method in ("irnn", "orthogonal", "skip"):
        assert reach[method] > 1e3 * max(reach["rnn"], 1e-30), reach


def test_methods_fill_unset_fields_and_refuse_another_cell():
    config = TrainConfig.from_dict({"method": "irnn", "lr": 5e-4})
    assert (config.cell, config.optimizer.lr, config.clip.max_norm) == ("irnn", 5e-4, 1.0)
    with pytest.raises(bptt.run.ConfigError) as info:
        TrainConfig.from_dict({"method": "irnn", "cell": "lstm"})
    assert info.value.field == "cell"
    with pytest.raises(bptt.run.ConfigError) as info:
        TrainConfig.from_dict({"method": "transformer"})
    assert info.value.field == "method"


@pytest.mark.parametrize("engine", ["generic", "fast"])
def test_the_matrix_exponential_runs_once_per_sequence(engine, gen, monkeypatch):
    cell = bptt.cells.OrthogonalRNNCell(2, 6, "modrelu", dtype=DT)
    calls = {"n": 0}
    real = torch.linalg.matrix_exp

    def counted(matrix):
        calls["n"] += 1
        return real(matrix)

    monkeypatch.setattr(torch.linalg, "matrix_exp", counted)
    x = torch.randn(3, 40, 2, generator=gen, dtype=DT)
    out, _ = bptt.unroll(cell, x, engine=engine)
    out[:, -1].sum().backward()
    assert calls["n"] == 1  # not once per step (40)


def test_modrelu_on_the_fast_path_shows_the_taps_what_the_generic_engine_does(gen):
    from bptt.taps import RecordNorms

    cell = bptt.cells.OrthogonalRNNCell(3, 5, "modrelu", dtype=DT)
    with torch.no_grad():
        cell.modrelu_bias.uniform_(-0.5, 0.2, generator=gen)  # some units off, some on
    x = torch.randn(4, 30, 3, generator=gen, dtype=DT)
    seen = []
    for engine in ("generic", "fast"):
        record = RecordNorms()
        cell.zero_grad()
        out, _ = bptt.unroll(cell, x, taps=[record], engine=engine)
        out.pow(2).sum().backward()
        seen.append((out.detach(), record.norms, cell.modrelu_bias.grad.clone()))
    # rounding only (30 steps of ~10-term sums, terms < 10): far inside 1e-11
    for a, b in zip(*seen, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
    assert (seen[0][2] != 0).sum() >= 3  # the bias gradient is not trivially zero


def test_sparse_fan_in_gives_each_unit_exactly_its_incoming_weights():
    """Martens' sparse initialisation: every row (a unit's incoming weights) has exactly
    fan_in nonzeros at distinct inputs, N(0, std^2); fewer inputs than fan_in: all drawn;
    the same generator state gives the same weight."""
    weight = init.sparse_fan_in_(
        torch.empty(200, 60), fan_in=15, std=0.5, generator=torch.Generator().manual_seed(0)
    )
    assert (weight != 0).sum(dim=1).tolist() == [15] * 200
    values = weight[weight != 0].double()
    # the sample std of 3,000 N(0, 0.25) draws: 0.5 within 5 sigma (5 / sqrt(2 n) relative)
    assert abs(values.std().item() / 0.5 - 1) < 5 / math.sqrt(2 * values.numel())
    # each input is chosen about equally often (uniformly): 200 * 15 / 60 = 50 per column
    per_input = (weight != 0).sum(dim=0).double()
    assert per_input.sum() == 3000 and per_input.max() < 50 + 5 * math.sqrt(50)
    narrow = init.sparse_fan_in_(torch.empty(5, 3), fan_in=15)
    assert bool((narrow != 0).all())
    again = init.sparse_fan_in_(
        torch.empty(200, 60), fan_in=15, std=0.5, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(again, weight)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"tensor": torch.empty(2, 3, 4)}, ValueError, "tensor"),
        ({"tensor": torch.empty(3, 3, dtype=torch.int64)}, ValueError, "tensor"),
        ({"tensor": [[1.0]]}, TypeError, "tensor"),
        ({"fan_in": 0}, ValueError, "fan_in"),
        ({"fan_in": True}, TypeError, "fan_in"),
        ({"fan_in": 2.5}, TypeError, "fan_in"),
        ({"std": -1.0}, ValueError, "std"),
        ({"std": math.nan}, ValueError, "std"),
        ({"generator": 3}, TypeError, "generator"),
    ],
)
def test_sparse_fan_in_refuses_bad_arguments_by_name(kwargs, error, name):
    arguments = {"tensor": torch.empty(4, 4), **kwargs}
    with pytest.raises(error, match=name):
        init.sparse_fan_in_(**arguments)
