"""The linear recurrent unit: its parametrisation, the scan against the sequential
recurrence, the taps, and the gradient by distance in closed form."""

from __future__ import annotations

import math

import pytest
import torch

import bptt
from bptt._kernels._scan import linear_scan
from bptt.cells import LRUCell
from bptt.diagnose import gradient_by_distance, recurrent_spectrum
from bptt.taps import ClipNorm, RecordNorms
from helpers import rounding_tol

F64 = torch.float64


def _cell(seed: int = 0, **kwargs) -> LRUCell:
    torch.manual_seed(seed)
    return LRUCell(3, 5, 7, dtype=F64, **kwargs)


def _run(cell, x, h0, taps, engine):
    cell.zero_grad()
    start = h0.clone().requires_grad_(True)
    record = RecordNorms()
    out, final = bptt.unroll(cell, x, start, taps=[record, *taps], engine=engine)
    (out.pow(2).sum() + final.sin().sum()).backward()
    grads = [p.grad.clone() for p in cell.parameters()]
    return out.detach(), final.detach(), grads, start.grad, record.norms


@pytest.mark.parametrize("taps", [(), (ClipNorm(0.05),)], ids=["record", "record+clip"])
@pytest.mark.parametrize("steps", [1, 2, 37, 64])
def test_the_scan_equals_the_sequential_recurrence(taps, steps):
    """Outputs, every gradient and the tap-recorded norms, float64, within 1e-10."""
    cell = _cell()
    gen = torch.Generator().manual_seed(steps)
    x = torch.randn(4, steps, 3, dtype=F64, generator=gen)
    h0 = torch.randn(4, 14, dtype=F64, generator=gen)
    scan = _run(cell, x, h0, taps, "fast")
    loop = _run(cell, x, h0, taps, "generic")
    for index in (0, 1, 3, 4):  # outputs, final state, dL/dh0, recorded norms
        a, b = scan[index], loop[index]
        assert torch.allclose(a, b, rtol=0, atol=1e-10), (a - b).abs().max()
    for a, b in zip(scan[2], loop[2], strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10), (a - b).abs().max()


@pytest.mark.parametrize("steps", [1, 5, 16, 17, 100, 1000])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_is_the_recurrence(steps, reverse):
    gen = torch.Generator().manual_seed(steps)
    lam = torch.polar(torch.rand(6, dtype=F64, generator=gen), torch.rand(6, dtype=F64) * 6)
    drive = torch.randn(3, steps, 6, dtype=torch.complex128, generator=gen)
    h0 = torch.randn(3, 6, dtype=torch.complex128, generator=gen)
    expected, h = [], h0
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        h = lam * h + drive[:, t]
        expected.append(h)
    if reverse:
        expected.reverse()
    # a sum of up to T terms of size <= max|drive| / (1 - max|lam|) (and the start's)
    scale = (drive.abs().max().item() + h0.abs().max().item()) / (1 - lam.abs().max().item())
    tol = rounding_tol(2 * 7 * steps, scale, F64)
    found = linear_scan(lam, drive, h0, reverse=reverse)
    assert torch.allclose(found, torch.stack(expected, 1), atol=tol, rtol=0)


def test_the_initialisation_is_the_papers():
    cell = LRUCell(2, 64, 512, r_min=0.4, r_max=0.9, max_phase=math.pi / 10)
    re, im = cell.eigenvalues()
    modulus, phase = torch.hypot(re, im), torch.atan2(im, re)
    assert modulus.min() >= 0.4 - 1e-6 and modulus.max() <= 0.9 + 1e-6
    assert phase.min() >= 0 and phase.max() <= math.pi / 10 + 1e-6
    # uniform on the ring's area: the median of |lambda|^2 is the middle of its range
    assert abs(modulus.pow(2).median().item() - (0.16 + 0.81) / 2) < 0.08
    gamma = torch.exp(cell.gamma_log)
    assert torch.allclose(gamma, torch.sqrt(1 - modulus**2), atol=1e-5)


def test_the_eigenvalues_stay_in_the_unit_disc_through_training():
    """Adam at a large rate on adding: the parametrisation keeps |lambda| < 1."""
    torch.manual_seed(0)
    model = bptt.SequenceModel(LRUCell(2, 16, r_min=0.99, r_max=0.9999), 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.3)
    x, y = bptt.tasks.adding_problem(40, 16, seed=0)
    largest = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x)[0], y)
        loss.backward()
        optimizer.step()
        re, im = model.cell.eigenvalues()
        largest.append(torch.hypot(re, im).max().item())
    assert max(largest) < 1.0
    assert largest[0] != largest[-1]  # the eigenvalues did move


def test_the_gradient_by_distance_is_the_closed_form():
    """For a loss w . y_{T-1}, dL/dh_{T-1-d} = conj(lambda)^d dL/dh_{T-1} unit by unit:
    its norm is sqrt(sum_j |lambda_j|^(2d) |delta_j|^2) with delta = C^H w."""
    cell = _cell(r_min=0.8, r_max=0.99)
    w = torch.randn(5, dtype=F64, generator=torch.Generator().manual_seed(2))
    x = torch.randn(3, 60, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    found = gradient_by_distance(cell, x, loss=lambda out, final: (out[:, -1] @ w).sum())
    delta = torch.view_as_complex((cell.weight_ho.detach().T @ w).reshape(-1, 2).contiguous())
    re, im = cell.eigenvalues()
    modulus = torch.hypot(re, im).detach()
    d = torch.arange(60, dtype=F64)
    closed = torch.sqrt((modulus[None] ** (2 * d[:, None]) * delta.abs()[None] ** 2).sum(1))
    assert torch.allclose(found["norms"], closed, rtol=1e-12, atol=0)
    assert found["gamma"] == pytest.approx(modulus.max().item(), rel=0.05)


def test_the_spectrum_is_the_eigenvalues():
    cell = _cell()
    re, im = cell.eigenvalues()
    largest = torch.hypot(re, im).max().item()
    spectrum = recurrent_spectrum(cell)
    assert spectrum["rho"] == pytest.approx(largest, rel=1e-12)
    assert spectrum["sigma_max"] == pytest.approx(largest, rel=1e-12)


def test_an_lru_trains_and_is_diagnosed_by_name(tmp_path):
    config = {"task": "adding", "length": 20, "cell": "lru", "hidden": 16, "steps": 30}
    result = bptt.train({**config, "threads": 1, "out": str(tmp_path)})
    assert result.summary["verdict"] is not None
    assert math.isfinite(result.summary["final_loss"])
    assert isinstance(result.model.cell, LRUCell)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"state_size": 0}, "state_size"),
        ({"state_size": 2.0}, "state_size"),
        ({"r_min": 0.9, "r_max": 0.9}, "r_min"),
        ({"r_max": 1.0}, "r_max"),
        ({"r_min": -0.1}, "r_min"),
        ({"max_phase": 0.0}, "max_phase"),
        ({"max_phase": 7.0}, "max_phase"),
    ],
)
def test_bad_settings_are_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        LRUCell(2, 4, **kwargs)


# --- the stacked LRU ------------------------------------------------------------------------


def _deep(seed: int = 0) -> bptt.cells.DeepLRUCell:
    torch.manual_seed(seed)
    return bptt.cells.DeepLRUCell(3, 6, layers=2, state_size=5, dtype=F64)


@pytest.mark.parametrize("steps", [1, 23])
def test_the_stacked_lru_layer_by_layer_equals_step_by_step(steps):
    """Outputs, final state and every gradient, float64, within 1e-10."""
    cell = _deep()
    gen = torch.Generator().manual_seed(steps)
    x = torch.randn(4, steps, 3, dtype=F64, generator=gen)
    h0 = torch.randn(4, 2 * 5 * 2 + 6, dtype=F64, generator=gen)
    results = {}
    for engine in ("fast", "generic"):
        cell.zero_grad()
        start = h0.clone().requires_grad_(True)
        out, final = bptt.unroll(cell, x, start, engine=engine)
        (out.pow(2).sum() + final.sin().sum()).backward()
        grads = [p.grad.clone() for p in cell.parameters()]
        results[engine] = (out.detach(), final.detach(), start.grad, grads)
    fast, loop = results["fast"], results["generic"]
    for a, b in zip(fast[:3], loop[:3], strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-10), (a - b).abs().max()
    for a, b in zip(fast[3], loop[3], strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10), (a - b).abs().max()


def test_the_stacked_lru_with_taps_runs_step_by_step_under_the_contract():
    cell = _deep()
    x = torch.randn(2, 9, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    record = RecordNorms()
    out, _ = bptt.unroll(cell, x, taps=[record])
    out[:, -1].sum().backward()
    assert record.norms.shape == (2, 9) and torch.isfinite(record.norms).all()
    assert (record.norms > 0).all()


def test_the_stacked_lru_learns_adding_where_one_unit_cannot():
    """Two layers with mixing multiply marker and value; a single linear unit with a
    linear readout stays near the baseline (its output is linear in the inputs)."""
    results = {}
    for cell in ("deep-lru", "lru"):
        config = {"task": "adding", "length": 20, "cell": cell, "hidden": 32, "steps": 300}
        config.update({"lr": 3e-3, "threads": 1, "seed": 0, "monitor": False})
        summary = bptt.train(config).summary
        results[cell] = summary["final_loss"] / summary["baseline_loss"]
    assert results["deep-lru"] < 0.3 < results["lru"]


def test_bad_stacks_are_refused():
    for layers in (0, 1.5, True):
        with pytest.raises(ValueError, match="layers"):
            bptt.cells.DeepLRUCell(2, 4, layers=layers)


def test_a_stacked_lru_gives_every_layers_eigenvalues_gamma_and_b_their_own_rate():
    from bptt.run import TrainConfig, build_model
    from bptt.run.training._build import parameter_groups
    from bptt.tasks import make_task

    config = TrainConfig.from_dict(
        {"task": "adding", "length": 5, "cell": "deep-lru", "hidden": 4, "lr_recurrent": 5e-4}
    )
    model = build_model(config, make_task("adding", 5))
    groups = parameter_groups(config, model)
    recurrent = {id(p) for p in groups[1]["params"]}
    expected = {
        id(getattr(unit, name))
        for unit in model.cell.units
        for name in ("nu_log", "theta_log", "gamma_log", "weight_ih")
    }  # minimal-LRU's "ssm" group; the encoder, C, D and the mixing keep lr
    assert recurrent == expected and groups[1]["lr"] == 5e-4
    assert len(groups[0]["params"]) + len(recurrent) == len(list(model.parameters()))


def test_the_lru_recipe_is_minimal_lrus_settings():
    from bptt.run import TrainConfig, build_model
    from bptt.run.training._build import make_optimizer
    from bptt.tasks import make_task

    config = TrainConfig.from_dict({"task": "adding", "length": 5, "method": "lru", "hidden": 4})
    kinds = (config.optimizer.kind, config.schedule.kind)
    assert (config.cell, *kinds) == ("deep-lru", "adam", "cosine")
    optimizer = make_optimizer(config, build_model(config, make_task("adding", 5)))
    assert [group["lr"] for group in optimizer.param_groups] == [1e-3, 5e-4]
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.05, 0.0]


@pytest.mark.parametrize("kind", ["lru", "deep-lru", "lstm", "gru"])
@pytest.mark.parametrize("engine", ["fast", "generic"])
def test_last_only_gives_the_last_step_and_the_same_gradients(kind, engine):
    torch.manual_seed(0)
    cell = bptt.cells.make_cell(kind, 3, 6, dtype=torch.float64)
    x = torch.randn(4, 37, 3, dtype=torch.float64)
    w = torch.randn(6, dtype=torch.float64)

    def run(last_only):
        cell.zero_grad()
        record = RecordNorms()
        taps = [record] if kind != "deep-lru" or engine == "generic" else []
        out, final = bptt.unroll(cell, x, engine=engine, taps=taps, last_only=last_only)
        (out[:, -1] @ w).sum().backward()
        grads = [p.grad.clone() for p in cell.parameters()]
        return out, final, grads, (record.norms if taps else None)

    full, final_full, grads_full, norms_full = run(False)
    last, final_last, grads_last, norms_last = run(True)
    assert last.shape == (4, 1, 6)

    def close(ours, theirs):  # the same operations, up to a matmul's blocking: rounding
        ours, theirs = ours.detach(), theirs.detach()
        tol = rounding_tol(100 * 37, 1.0 + float(theirs.detach().abs().max()), torch.float64)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=tol)

    close(last, full[:, -1:])
    close(final_last if isinstance(final_last, torch.Tensor) else final_last[0],
          final_full if isinstance(final_full, torch.Tensor) else final_full[0])  # fmt: skip
    for ours, theirs in zip(grads_last, grads_full, strict=True):
        close(ours, theirs)
    if norms_full is not None:
        close(norms_last, norms_full)
