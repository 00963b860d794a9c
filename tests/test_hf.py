"""Hessian-free optimisation (float64)."""

from __future__ import annotations

import copy
import csv
import shutil

import pytest
import torch
from torch import nn

import bptt
from bptt.optim import HessianFree, conjugate_gradient, gauss_newton_product

DT = torch.float64


def _tiny(gen):
    torch.manual_seed(0)
    model = bptt.SequenceModel(bptt.cells.RNN(2, 3, dtype=DT), 4, engine="generic")
    x = torch.randn(5, 6, 2, generator=gen, dtype=DT)
    return model, x


def _explicit_gauss_newton(model, x, loss):
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    def outputs_of(vector):
        pieces, start = {}, 0
        for name, p in zip(names, params, strict=True):
            pieces[name] = vector[start : start + p.numel()].view_as(p)
            start += p.numel()
        return torch.func.functional_call(model, pieces, (x,))[0]

    out = outputs_of(flat)
    jacobian = torch.autograd.functional.jacobian(outputs_of, flat).reshape(out.numel(), -1)
    if loss == "mse":
        hessian = 2.0 / out.numel() * torch.eye(out.numel(), dtype=DT)
    else:
        p = torch.softmax(out, -1)
        blocks = [torch.diag(row) - torch.outer(row, row) for row in p]
        hessian = torch.block_diag(*blocks) / out.shape[0]
    return jacobian.T @ hessian @ jacobian


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_gauss_newton_product_equals_the_explicit_matrix(loss, gen):
    model, x = _tiny(gen)
    explicit = _explicit_gauss_newton(model, x, loss)
    params = list(model.parameters())
    out, _ = model(x)
    for _ in range(3):
        v = torch.randn(explicit.shape[0], generator=gen, dtype=DT)
        pieces = list(torch.split(v, [p.numel() for p in params]))
        pieces = [piece.view_as(p) for piece, p in zip(pieces, params, strict=True)]
        product = torch.cat(
            [g.reshape(-1) for g in gauss_newton_product(out, params, pieces, loss)]
        )
        torch.testing.assert_close(product, explicit @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("forward_mode", [False, True])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_the_curvature_product_is_the_damped_explicit_matrix(loss, forward_mode, gen):
    model, x = _tiny(gen)
    explicit = _explicit_gauss_newton(model, x, loss)
    opt = HessianFree(
        model.parameters(), loss=loss, damping=0.3, module=model if forward_mode else None
    )
    target = torch.zeros(5, 4, dtype=DT) if loss == "mse" else torch.zeros(5, dtype=torch.long)
    loss_fn = nn.functional.mse_loss if loss == "mse" else nn.functional.cross_entropy

    def closure():
        out = model(x)[0]
        return loss_fn(out, target), out

    product = opt.curvature_product(closure)
    damped = explicit + 0.3 * torch.eye(explicit.shape[0], dtype=DT)
    for _ in range(3):
        v = torch.randn(explicit.shape[0], generator=gen, dtype=DT)
        torch.testing.assert_close(product(v), damped @ v, rtol=1e-10, atol=1e-12)


def test_conjugate_gradient_solves_a_random_spd_system(gen):
    m = torch.randn(40, 40, generator=gen, dtype=DT)
    a = m @ m.T + 40 * torch.eye(40, dtype=DT)
    b = torch.randn(40, generator=gen, dtype=DT)
    x, stored, iterations = conjugate_gradient(lambda v: a @ v, b, max_iters=200, tol=1e-14)
    assert torch.linalg.vector_norm(a @ x - b) / torch.linalg.vector_norm(b) < 1e-8
    assert stored[-1][0] == iterations
    preconditioned, _, _ = conjugate_gradient(
        lambda v: a @ v, b, max_iters=200, tol=1e-14, preconditioner=1 / a.diagonal()
    )
    torch.testing.assert_close(preconditioned, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-10)


def test_on_a_convex_quadratic_hf_converges_in_a_few_steps(gen):
    """Least squares: the Gauss-Newton matrix is the Hessian, so Newton steps are exact."""
    features = torch.randn(100, 8, generator=gen, dtype=DT)
    target = features @ torch.randn(8, 1, generator=gen, dtype=DT) + 0.1
    layer = nn.Linear(8, 1, dtype=DT)
    optimum = torch.linalg.lstsq(
        torch.cat([features, torch.ones(100, 1, dtype=DT)], 1), target
    ).solution
    best = nn.functional.mse_loss(
        torch.cat([features, torch.ones(100, 1, dtype=DT)], 1) @ optimum, target
    )
    opt = HessianFree(layer.parameters(), damping=1e-3, cg_tol=1e-10, max_cg=50)

    def closure():
        out = layer(features)
        return nn.functional.mse_loss(out, target), out

    for _ in range(4):
        opt.step(closure)
    assert closure()[0].item() - best.item() < 1e-8


def test_structural_damping_with_mu_zero_is_plain_damping(gen):
    model, x = _tiny(gen)
    y = torch.randn(5, 4, generator=gen, dtype=DT)

    def trained(mu: float, with_hidden: bool) -> torch.Tensor:
        net = copy.deepcopy(model)
        opt = HessianFree(net.parameters(), damping=0.5, mu=mu, max_cg=30)

        def closure():
            hidden, _ = bptt.unroll(net.cell, x, engine="generic")  # (B, T, H)
            prediction = net.head(hidden[:, -1])
            loss = nn.functional.mse_loss(prediction, y)
            return (loss, prediction, hidden) if with_hidden else (loss, prediction)

        for _ in range(2):
            opt.step(closure)
        return torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    plain = trained(0.0, False)
    torch.testing.assert_close(trained(0.0, True), plain, rtol=0, atol=0)
    assert not torch.allclose(trained(0.5, True), plain)  # mu > 0 changes the steps


@pytest.mark.parametrize(("loss", "mu"), [("mse", 0.0), ("cross_entropy", 0.0), ("mse", 0.5)])
def test_forward_mode_products_take_the_steps_of_the_reverse_mode_ones(loss, mu, gen):
    """With ``module``, J v comes from torch.func.jvp; without, from the double-vjp
    trick (checked against the explicit matrix above): the steps must agree."""
    model, x = _tiny(gen)
    y = torch.randn(5, 4, generator=gen, dtype=DT)
    if loss == "cross_entropy":
        y = torch.randint(0, 4, (5,), generator=gen)

    def trained(forward_mode: bool) -> torch.Tensor:
        net = copy.deepcopy(model)
        module = net if forward_mode else None
        opt = HessianFree(net.parameters(), loss=loss, mu=mu, max_cg=30, module=module)

        def closure():
            hidden, _ = bptt.unroll(net.cell, x, engine="generic")  # (B, T, H)
            prediction = net.head(hidden[:, -1])
            value = getattr(nn.functional, {"mse": "mse_loss"}.get(loss, loss))(prediction, y)
            return value, prediction, hidden

        for _ in range(3):
            opt.step(closure)
        assert opt.last["cg_iters"] > 1
        return torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    reverse = trained(False)
    assert not torch.allclose(reverse, torch.cat([p.reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(trained(True), reverse, rtol=1e-9, atol=1e-10)


def test_a_module_without_the_parameters_is_refused():
    with pytest.raises(ValueError, match="does not hold"):
        HessianFree([nn.Parameter(torch.zeros(2))], module=nn.Linear(2, 2))


def test_the_state_survives_a_state_dict_round_trip(gen):
    model, x = _tiny(gen)
    y = torch.randn(5, 4, generator=gen, dtype=DT)
    twin = copy.deepcopy(model)

    def closure_for(net):
        def closure():
            out = net(x)[0]
            return nn.functional.mse_loss(out, y), out

        return closure

    first = HessianFree(model.parameters(), damping=2.0, max_cg=20)
    for _ in range(2):
        first.step(closure_for(model))
    twin.load_state_dict(model.state_dict())
    second = HessianFree(twin.parameters(), damping=99.0, max_cg=20)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    assert second.param_groups[0]["damping"] == first.param_groups[0]["damping"]
    for _ in range(2):
        first.step(closure_for(model))
        second.step(closure_for(twin))
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_settings_are_rejected():
    p = [nn.Parameter(torch.zeros(2))]
    for kwargs in ({"loss": "hinge"}, {"damping": 0}, {"mu": -1}, {"decay": 2}, {"max_cg": 0}):
        with pytest.raises(ValueError):
            HessianFree(p, **kwargs)


HF_RUN = {"task": "adding", "length": 10, "cell": "rnn", "hidden": 8, "steps": 20}
HF_RUN.update({"batch_size": 64, "test_size": 64, "eval_every": 10, "log_every": 5})
HF_RUN.update({"threads": 1, "optimizer": "hf", "checkpoint_every": 5})


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_training_with_hf_solves_short_adding_and_logs_its_solver(tmp_path):
    result = bptt.train({**HF_RUN, "out": str(tmp_path / "run")})
    rows = _rows(tmp_path / "run")
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    assert all(int(r["cg_iters"]) >= 1 and float(r["damping"]) > 0 for r in rows)
    assert all(r["lr"] == "" for r in rows)  # HF has no learning rate
    # the loss must fall well below the adding baseline (1/6) in 20 steps
    assert result.summary["final_loss"] < 0.05 * result.summary["baseline_loss"]
    assert result.summary["solved"]


def test_a_resumed_hf_run_ends_bitwise_equal_to_an_uninterrupted_one(tmp_path):
    reference = tmp_path / "reference"
    bptt.train({**HF_RUN, "out": str(reference)})
    cut = tmp_path / "cut"
    shutil.copytree(reference, cut)
    for name in ("model.pt", "summary.json"):  # as if killed just after step 10's checkpoint
        (cut / name).unlink()
    for step in (15, 20):
        for suffix in (".pt", ".pt.sha256"):
            (cut / "checkpoints" / f"step-{step:09d}{suffix}").unlink()
    bptt.resume(cut)  # holds the CG warm start and the damping of step 10
    ours = torch.load(cut / "model.pt", weights_only=True)
    theirs = torch.load(reference / "model.pt", weights_only=True)
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name
    untimed = [{k: v for k, v in row.items() if k != "wall_s"} for row in _rows(cut)]
    assert untimed == [{k: v for k, v in r.items() if k != "wall_s"} for r in _rows(reference)]


def test_structural_damping_reaches_the_training_loop(tmp_path):
    short = {**HF_RUN, "steps": 4, "checkpoint_every": 0}
    plain = bptt.train(short).model
    damped = bptt.train({**short, "hf_mu": 0.5}).model
    x = torch.randn(3, 10, 2)
    torch.testing.assert_close(damped.predict_with_hidden(x)[0], damped(x)[0])
    assert not torch.allclose(plain(x)[0], damped(x)[0])  # mu changed the steps


def test_several_parameter_groups_are_optimised_jointly(gen):
    """Groups share one damping and one CG solve: splitting changes nothing."""
    model, x = _tiny(gen)
    y = torch.randn(5, 4, generator=gen, dtype=DT)

    def trained(grouped: bool) -> torch.Tensor:
        net = copy.deepcopy(model)
        params = (
            [{"params": net.cell.parameters()}, {"params": net.head.parameters()}]
            if grouped
            else net.parameters()
        )
        opt = HessianFree(params, damping=0.5, max_cg=20, module=net)

        def closure():
            out = net(x)[0]
            return nn.functional.mse_loss(out, y), out

        for _ in range(3):
            opt.step(closure)
        damping = {group["damping"] for group in opt.param_groups}
        assert len(damping) == 1
        return torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    torch.testing.assert_close(trained(True), trained(False), rtol=0, atol=0)
