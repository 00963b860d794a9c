"""TensorBoard: what a run and the Monitor write, read back from the event files."""

from __future__ import annotations

import csv

import pytest
import torch
from click.testing import CliRunner

import bptt
from bptt.cli import app
from bptt.diagnose import Monitor
from bptt.run import ConfigError

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is not installed (pip install 'bptt[tensorboard]')",
)
SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter


def _events(path):
    # size_guidance 0: keep every event, not a sample of them
    reader = event_accumulator.EventAccumulator(
        str(path), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0}
    )
    reader.Reload()
    return reader


def test_a_run_writes_its_metrics_and_diagnoses_to_tensorboard(tmp_path):
    config = {"task": "adding", "length": 8, "cell": "rnn", "hidden": 8, "steps": 40}
    config.update({"clip": "norm", "clip_norm": 0.5, "eval_every": 20, "diagnose_every": 20})
    config.update({"threads": 1, "tensorboard": True, "out": str(tmp_path)})
    bptt.train(config)
    events = _events(tmp_path / "tensorboard")
    tags = set(events.Tags()["scalars"])
    assert {"loss", "grad_norm", "clip_threshold", "clipped", "lr", "test_loss"} <= tags
    assert "grad_norm/cells.0.weight_hh" in tags and "grad_spike" in tags
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    written = {e.step: e.value for e in events.Scalars("loss")}
    assert sorted(written) == [int(r["step"]) for r in rows]
    for row in rows:  # TensorBoard stores float32
        assert written[int(row["step"])] == pytest.approx(float(row["loss"]), rel=1.2e-7)
    tested = {e.step for e in events.Scalars("test_loss")}
    assert tested == {20, 40}
    images = events.Images("gradient_by_distance")
    assert [image.step for image in images] == [20, 40]
    assert all(image.width > 100 and image.height > 50 for image in images)


def test_the_monitor_writes_each_row_as_scalars(tmp_path):
    torch.manual_seed(0)
    model = bptt.SequenceModel(bptt.cells.GRUCell(2, 8), 1)
    writer = SummaryWriter(str(tmp_path))
    monitor = Monitor(model, writer=writer)
    for step in range(1, 6):
        x, y = bptt.tasks.adding_problem(6, 4, seed=step)
        model.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x)[0], y)
        loss.backward()
        row = monitor.step(step, loss)
    writer.close()
    events = _events(tmp_path)
    assert [e.step for e in events.Scalars("grad_norm")] == [1, 2, 3, 4, 5]
    assert events.Scalars("grad_norm")[-1].value == pytest.approx(row["grad_norm"], rel=1.2e-7)
    assert "loss_z" not in events.Tags()["scalars"]  # NaN while the window fills: skipped
    with pytest.raises(TypeError, match="add_scalar"):
        Monitor(model, writer=object())


def test_tensorboard_without_a_run_directory_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="tensorboard"):
        bptt.train({"task": "adding", "length": 4, "steps": 1, "tensorboard": True})
    result = CliRunner().invoke(app, ["train", "--length", "4", "--steps", "1", "--tensorboard"])
    assert result.exit_code == 2 and "tensorboard" in result.output
    assert "Traceback" not in result.output
