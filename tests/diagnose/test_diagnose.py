"""Diagnostics against closed forms and known cases."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt
from bptt.diagnose import (
    Monitor,
    SpikeDetector,
    diagnose,
    gradient_by_distance,
    jacobian_norms,
    jacobian_product_norms,
    recurrent_spectrum,
    saturation,
)
from bptt.precision import flush_denormal
from helpers import LinearCell, make_cell

DT = torch.float64


def _orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=DT))
    return q


@pytest.mark.parametrize("lam", [0.8, 0.95, 1.0, 1.05])
def test_linear_rnn_rate_and_jacobian_norm_are_lambda(lam, gen):
    cell = LinearCell(lam * _orthogonal(8, gen), input_size=2)
    x = torch.randn(4, 40, 2, generator=gen, dtype=DT)
    out = gradient_by_distance(cell, x)
    assert abs(out["gamma"] - lam) < 0.01 * lam
    torch.testing.assert_close(out["norms"], lam ** torch.arange(40, dtype=DT), rtol=1e-9, atol=0)
    jac = jacobian_norms(cell, x)
    assert jac.shape == (4, 40)
    torch.testing.assert_close(jac, torch.full_like(jac, abs(lam)), rtol=0, atol=1e-4)
    products = jacobian_product_norms(cell, x, window=5)
    assert products.shape == (4, 8)
    torch.testing.assert_close(products, torch.full_like(products, lam**5), rtol=1e-4, atol=0)


def test_horizon_and_underflow_follow_the_rate(gen):
    lam = 0.5
    cell = LinearCell(lam * _orthogonal(4, gen), input_size=1).float()
    x = torch.randn(2, 200, 1, generator=gen)
    with flush_denormal(False):
        slow = gradient_by_distance(cell, x)
    with flush_denormal(True):
        flushed = gradient_by_distance(cell, x)
    assert slow["horizon"] == math.ceil(math.log(1e-3) / math.log(lam))  # 0.5^10 < 1e-3
    # float32: normal down to 2^-126, subnormal down to 2^-149, then zero
    assert slow["subnormal_fraction"][130:145].min() > 0
    assert slow["underflow_at"] is not None and 145 <= slow["underflow_at"] <= 155
    assert flushed["subnormal_fraction"].max() == 0
    assert flushed["underflow_at"] is not None and flushed["underflow_at"] < slow["underflow_at"]
    assert abs(slow["underflow_distance"] - 126) < 2  # extrapolated from gamma


def test_verdicts_for_the_classic_cases(gen):
    torch.manual_seed(0)
    small = bptt.cells.RNNCell(1, 32)
    with torch.no_grad():
        small.weight_hh.mul_(0.1)
    assert diagnose(small, torch.randn(8, 50, 1, generator=gen)).verdict == "vanishing"

    relu = bptt.cells.RNNCell(1, 16, nonlinearity="relu")
    with torch.no_grad():
        relu.weight_hh.copy_(1.5 * torch.eye(16))
        relu.weight_ih.abs_()
        relu.bias_ih.zero_()
        relu.bias_hh.zero_()
    positive = torch.rand(8, 30, 1, generator=gen) + 0.1
    result = diagnose(relu, positive)
    assert result.verdict == "exploding"
    assert abs(result.numbers["gamma"] - 1.5) < 0.01
    assert any(remedy.change == "clip_norm" for remedy in result.remedies)

    lstm = bptt.cells.LSTMCell(1, 32)
    with torch.no_grad():
        lstm.bias_ih[32:64].fill_(3.0)  # forget gate
        lstm.bias_hh[32:64].zero_()
    healthy = diagnose(lstm, torch.randn(8, 20, 1, generator=gen))
    assert healthy.verdict == "healthy", healthy.reasons
    assert healthy.numbers["saturation/f"] >= 0


def test_dependency_longer_than_the_probe_is_extrapolated(gen):
    cell = LinearCell(0.9 * _orthogonal(4, gen), input_size=1)
    x = torch.randn(2, 20, 1, generator=gen, dtype=DT)
    assert diagnose(cell, x).verdict == "healthy"  # 0.9^19 = 0.14
    longer = diagnose(cell, x, dependency_length=200)  # 0.9^199 ~ 1e-9
    assert longer.verdict == "vanishing"
    assert longer.numbers["ratio_at_dependency"] == pytest.approx(0.9**199, rel=1e-6)


def test_recurrent_spectrum_per_gate():
    cell = bptt.cells.GRUCell(2, 3, dtype=DT)
    with torch.no_grad():
        cell.weight_hh.copy_(torch.cat([k * torch.eye(3, dtype=DT) for k in (1.0, 2.0, 0.5)]))
    spectrum = recurrent_spectrum(cell)
    assert spectrum["rho_r"] == pytest.approx(1.0) and spectrum["rho_z"] == pytest.approx(2.0)
    assert spectrum["sigma_n"] == pytest.approx(0.5) and spectrum["rho"] == pytest.approx(2.0)
    assert spectrum["sigma_max"] == pytest.approx(math.sqrt(1 + 4 + 0.25))


def test_saturation_counts_saturated_and_dead_units(gen):
    relu = bptt.cells.RNNCell(1, 8, nonlinearity="relu", dtype=DT)
    with torch.no_grad():
        relu.weight_hh.zero_()
        relu.weight_ih.fill_(1.0)
        relu.bias_ih.zero_()
        relu.bias_hh.zero_()
    x = torch.cat([torch.ones(2, 3, 1, dtype=DT), -torch.ones(2, 2, 1, dtype=DT)], 1)
    dead = saturation(relu, x)["dead"]
    torch.testing.assert_close(dead, torch.tensor([0, 0, 0, 1, 1], dtype=DT))
    tanh = bptt.cells.RNNCell(1, 4, dtype=DT)
    with torch.no_grad():
        tanh.weight_ih.fill_(100.0)
    assert saturation(tanh, torch.ones(1, 3, 1, dtype=DT))["tanh"].min() > 0.5
    with pytest.raises(TypeError, match="built-in"):
        saturation(LinearCell(torch.eye(2, dtype=DT), 1), torch.ones(1, 2, 1, dtype=DT))


curves = st.tuples(
    st.integers(0, 10_000),  # seed
    st.floats(0.0, 0.1),  # noise level (log units)
    st.integers(200, 600),  # length
)


def _curve(seed: int, noise: float, length: int) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=DT)
    smooth = 2.0 * torch.exp(-t / 150) + 0.1
    return (smooth * torch.exp(noise * torch.randn(length, generator=gen, dtype=DT))).tolist()


@settings(max_examples=60, deadline=None)
@given(curve=curves, data=st.data())
def test_every_injected_spike_is_found_and_smooth_curves_raise_no_alarm(curve, data):
    values = _curve(*curve)
    quiet = SpikeDetector()
    assert not any(quiet.update(v)[0] for v in values)  # no false alarm
    steps = data.draw(
        st.lists(st.integers(10, len(values) - 1), min_size=1, max_size=8, unique=True)
    )
    factors = data.draw(st.lists(st.floats(5.0, 1000.0), min_size=len(steps), max_size=len(steps)))
    for step, factor in zip(steps, factors, strict=True):
        values[step] *= factor
    detector = SpikeDetector()
    found = {k for k, v in enumerate(values) if detector.update(v)[0]}
    assert found == set(steps)


def test_monitor_rows_and_the_nonfinite_locator(gen):
    model = bptt.SequenceModel(bptt.cells.GRUCell(1, 6, dtype=DT), 1)
    monitor = Monitor(model, min_history=2, locate_steps=True)
    x, y = torch.randn(3, 9, 1, generator=gen, dtype=DT), torch.randn(3, 1, generator=gen, dtype=DT)

    def poison(t, delta):  # a NaN enters the hidden-state gradient at step 4
        return delta * math.nan if t == 4 else delta

    keys = None
    for step, taps in enumerate([(), (), (), (poison,)]):
        model.zero_grad()
        pred, _ = model(x, taps=(*taps, *monitor.taps))
        loss = torch.nn.functional.mse_loss(pred, y)
        loss.backward()
        row = monitor.step(step, loss)
        keys = keys or list(row)
        assert list(row) == keys  # stable keys
    assert "grad_norm/cells.0.weight_hh" in row
    assert row["nonfinite"] and row["nonfinite_step"] == 4
    assert row["nonfinite_param"] == "cells.0.weight_ih"  # the first in named_parameters order
    assert monitor.summary()["nonfinite"] == 1

    # without the always-on tap, a rerun locates it, and only on the non-finite step
    calls = []

    def rerun(extra):
        calls.append(extra)
        model.zero_grad()
        pred, _ = model(x, taps=(poison, *extra))
        torch.nn.functional.mse_loss(pred, y).backward()

    lazy = Monitor(model, min_history=2)
    assert lazy.taps == ()
    model.zero_grad()
    torch.nn.functional.mse_loss(model(x)[0], y).backward()
    assert lazy.step(0, 1.0, rerun=rerun)["nonfinite_step"] is None and not calls
    rerun(())
    calls.clear()
    row = lazy.step(1, 1.0, rerun=rerun)
    assert row["nonfinite_step"] == 4 and len(calls) == 1


def test_the_attractor_picture_vanishes_inside_and_explodes_at_the_boundary(tmp_path):
    from bptt.diagnose.attractor import basin_gradient_map, plot_basin_gradients, two_basin_cell

    result = basin_gradient_map(two_basin_cell(), resolution=41, steps=30)
    norms, axis = result["norms"], result["axis"]
    inside = norms[:, (axis.abs() > 0.2)]
    boundary = norms[:, axis.abs() < 1e-9]
    assert inside.max() < 1e-6 and boundary.min() > 1e6
    assert torch.equal(
        result["final"].sign()[:, axis > 0], torch.ones_like(result["final"][:, axis > 0])
    )
    path = plot_basin_gradients(result, tmp_path / "basins.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="gain"):
        two_basin_cell(gain=0.5)


def test_the_basins_task_is_decided_by_the_first_step():
    x, y = bptt.tasks.two_basins(7, 64, seed=1)
    assert x.shape == (64, 7, 2) and y.shape == (64, 1)
    assert torch.equal(y, torch.where(x[:, 0, :1] > 0, 1.0, -1.0))
    task = bptt.tasks.make_task("basins", 7)
    assert task.loss(torch.zeros_like(y), y).item() == pytest.approx(task.baseline_loss)


@pytest.mark.parametrize("kind", ["rnn-tanh", "lstm", "gru"])
def test_the_segmented_backward_equals_one_backward_over_all_steps(kind, gen):
    from bptt.diagnose._distance import SEGMENT

    cell = make_cell(kind, 2, 6)  # float64
    with torch.no_grad():
        cell.weight_hh.mul_(2.0)  # gradients that grow and shrink along the way
    steps = 2 * SEGMENT + 37  # three segments, the first one short
    x = torch.randn(3, steps, 2, generator=gen, dtype=torch.float64)
    segmented = gradient_by_distance(cell, x, seed=4)
    unit = torch.randn(6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    unit = unit / unit.norm()
    whole = gradient_by_distance(cell, x, loss=lambda out, _: (out[:, -1] @ unit).sum())
    # the same arithmetic in another order of segments: float64 rounding of T steps
    torch.testing.assert_close(segmented["norms"], whole["norms"], rtol=1e-9, atol=0)
    torch.testing.assert_close(segmented["zero_fraction"], whole["zero_fraction"])
    assert segmented["horizon"] == whole["horizon"]


_PEAK = """
import resource, sys, torch, bptt
from bptt.diagnose import diagnose
torch.manual_seed(0)
torch.set_num_threads(1)
steps = int(sys.argv[1])
diagnose(bptt.cells.LSTMCell(2, 64), torch.randn(16, steps, 2), steps, iters=5)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_mb(steps: int) -> float:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(steps)], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def test_a_diagnosis_at_t_2000_needs_memory_for_its_states_not_for_t_steps_of_graph():
    # The states of a trajectory of 2000 steps (16 sequences, LSTM H=64) take 16 MB; the
    # diagnosis before it was bounded grew by 1.8 GB from T=200 to T=2000 (measured:
    # 547 -> 2330 MB), now by about 54 MB (387 -> 441 MB).
    growth = _peak_mb(2000) - _peak_mb(200)
    assert growth < 200, f"peak memory grew by {growth:.0f} MB from T=200 to T=2000"


def test_verdicts_and_remedies_are_data_the_library_states_without_the_applications_flags():
    from bptt.diagnose import REMEDIES, RUN_VERDICTS, Remedy, Verdict
    from bptt.diagnose._verdict import HEAD_REMEDIES

    # a verdict is its string: compared, formatted, a key, and written to JSON as it
    assert Verdict.EXPLODING == "exploding" and {"vanishing": 1}[Verdict.VANISHING] == 1
    assert json.loads(json.dumps({"v": Verdict.HEALTHY_NOT_LEARNED})) == {
        "v": "healthy but not learned"
    }
    assert RUN_VERDICTS[0] == "exploding" and RUN_VERDICTS[-1] == "healthy"
    # what to change, by a key, and why in the library's terms: no command-line flag
    remedies = [r for found in REMEDIES.values() for r in found] + list(HEAD_REMEDIES)
    assert all(isinstance(r, Remedy) and r.change and r.why for r in remedies)
    assert not [r.why for r in remedies if "--" in r.why or "bptt train" in r.why]
    assert set(REMEDIES) == {Verdict.EXPLODING, Verdict.VANISHING, Verdict.HEALTHY}
