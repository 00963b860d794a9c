"""The echo state network runner (`bptt esn`, `bptt.run.run_esn`): its tasks, run
directory, settings and progress, on small real reservoirs."""

from __future__ import annotations

import json

import pytest
import torch

from bptt.reservoir import Reservoir
from bptt.run import run_esn


def test_mackey_glass_one_step_and_free_running(tmp_path):
    summary = run_esn(
        {"units": 300, "steps": 3000, "train_steps": 2000, "seed": 1, "out": str(tmp_path)}
    )
    # seed 1's draw, the same on every CPU (NumPy's streams; the series is scalar IEEE
    # arithmetic); rounding moves the states by ~1e-14 (the bounds above), which the
    # readout's conditioning cannot turn into the margins here (measured 0.0045, 0.096)
    assert summary["nrmse"] < 0.05 and summary["nrmse_84"] < 0.2
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["nrmse"] == summary["nrmse"]
    weights = torch.load(tmp_path / "model.pt", weights_only=True)
    assert weights["W"].shape == (300, 300) and weights["W_out"].shape == (300, 1)


def test_bptt_esn_command(tmp_path):
    from click.testing import CliRunner

    from bptt.cli import app

    args = [
        "esn",
        "--units",
        "100",
        "--steps",
        "2000",
        "--train-steps",
        "1500",
        "--out",
        str(tmp_path),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "nrmse" in result.output and (tmp_path / "summary.json").exists()
    bad = CliRunner().invoke(app, ["esn", "--leak-rate", "2"])
    assert bad.exit_code == 2 and "leak_rate" in bad.output
    bad = CliRunner().invoke(app, ["esn", "--dtype", "float16"])
    assert bad.exit_code == 2 and "dtype" in bad.output


def test_float32_states_predict_as_well_as_float64():
    # the readout is solved in float64 either way; the states' rounding (1e-7) is far
    # below the prediction error. Rounding every state to float32 moved the NRMSE by
    # 6e-5 (relative); another CPU's float32 kernels round by no more than that, so
    # cannot take it to 0.02
    config = {"units": 200, "steps": 3000, "train_steps": 2000, "seed": 1}
    wide, narrow = run_esn(config), run_esn({**config, "dtype": "float32"})
    assert narrow["nrmse"] == pytest.approx(wide["nrmse"], rel=0.02)
    assert narrow["nrmse"] < 0.05


_SMALL = {"units": 60, "steps": 600, "train_steps": 400, "washout": 50, "free_steps": 20}


def test_each_task_has_its_own_defaults_and_refuses_the_others_settings():
    from bptt.run import ESN_TASK_DEFAULTS, ConfigError, ESNConfig

    for task, defaults in ESN_TASK_DEFAULTS.items():
        config = ESNConfig(task=task)
        assert {k: getattr(config, k) for k in defaults} == defaults
        others = set().union(*ESN_TASK_DEFAULTS.values()) - set(defaults)
        assert others and all(getattr(config, k) is None for k in others)
        for name in others:  # even another task's own default value
            owner = next(t for t, d in ESN_TASK_DEFAULTS.items() if name in d)
            with pytest.raises(ConfigError) as info:
                ESNConfig.from_dict({"task": task, name: ESN_TASK_DEFAULTS[owner][name]})
            assert info.value.field == name and "used only with task" in str(info.value)
    with pytest.raises(ConfigError, match="unknown key"):
        ESNConfig.from_dict({"task": "japanese-vowels", "leak": 0.5})


def test_the_run_directory_records_the_settings_used_and_is_not_overwritten(tmp_path):
    from bptt.run import ConfigError, ESNConfig, load_toml

    out = tmp_path / "run"
    first = run_esn({**_SMALL, "out": str(out)})
    recorded = load_toml(out / "config.toml")
    assert recorded["leak_rate"] == 0.3 and recorded["ridge"] == 1e-6  # task defaults
    assert "ensemble" not in recorded and "reduce" not in recorded  # the other task's
    assert ESNConfig.from_dict(recorded) == ESNConfig.from_dict({**_SMALL, "out": str(out)})
    with pytest.raises(ConfigError, match="already holds a run"):
        run_esn({**_SMALL, "seed": 1, "out": str(out)})
    assert json.loads((out / "summary.json").read_text())["nrmse"] == first["nrmse"]
    (out / "metrics.csv").write_text("step\n")  # a file of another kind of run
    second = run_esn({**_SMALL, "seed": 1, "out": str(out)}, overwrite=True)
    assert json.loads((out / "summary.json").read_text())["nrmse"] == second["nrmse"]
    assert second["nrmse"] != first["nrmse"] and not (out / "metrics.csv").exists()
    (tmp_path / "file").write_text("")
    for bad in (tmp_path / "file", tmp_path / "file" / "run"):
        with pytest.raises(ConfigError, match="out: "):
            run_esn({**_SMALL, "out": str(bad)})


def test_a_reservoir_with_no_cycle_names_the_setting_to_change():
    from bptt.run import ConfigError

    # a 1-unit W is its one entry: nonzero with probability density (seed 0 draws none)
    with pytest.raises(ValueError, match="raise density or units") as info:
        Reservoir(1, density=0.1, seed=0)
    assert "density 0.1" in str(info.value) and "units 1" in str(info.value)
    assert abs(Reservoir(1, spectral_radius=0.7, density=1.0, seed=0).W[0, 0]) == 0.7
    with pytest.raises(ConfigError) as info:
        run_esn({**_SMALL, "density": 1e-9})
    assert info.value.field == "density" and "units 60" in str(info.value)


def test_run_esn_shows_each_stage_when_asked(monkeypatch):
    from rich.progress import Progress

    from bptt.run.esn import _esn

    shown, finished = [], []

    class Recording(Progress):
        def update(self, task_id, **fields):
            if fields.get("description"):
                shown.append(fields["description"])
            super().update(task_id, **fields)

        def stop(self):
            finished.extend((t.completed, t.total) for t in self.tasks)
            super().stop()

    monkeypatch.setattr(_esn, "Progress", Recording)
    run_esn(_SMALL, progress=True)
    assert [s.split(" (")[0] for s in shown] == [
        "series and reservoir",
        "driving the reservoir",
        "fitting the readout",
        "running free",
    ]
    assert finished == [(4, 4)]
    shown.clear()
    run_esn(_SMALL)  # off by default
    assert shown == []


def test_a_leaky_reservoir_learns_the_long_range_tasks_a_plain_one_cannot():
    """The readout of a leaky-integrator reservoir's last state solves adding and
    temporal order at T = 50; the same reservoir without leaking (leak rate 1) stays at
    the baseline: the fading memory of tanh units forgets the marked values within tens
    of steps, an integrator keeps them (Sutskever et al. 2013; Pascanu et al. 2013).
    Margins, over seeds 0-4 at these settings: the leaky MSE 0.0025-0.0031 (solved below
    0.01), the plain one 0.18-0.21 (baseline 0.167); temporal order 0 errors of 500
    against 366-385."""
    small = {"length": 50, "units": 200, "train_size": 1000, "test_size": 500}
    adding = run_esn({"task": "adding", **small})
    assert adding["solved"] and adding["final_loss"] < 0.5 * 0.01
    plain = run_esn({"task": "adding", **small, "leak_rate": 1.0})
    assert not plain["solved"] and plain["final_loss"] > 0.8 * plain["baseline_loss"]
    order = run_esn({"task": "order", **small})
    assert order["solved"] and order["test_errors"] < 5 and order["test_size"] == 500
    chance = run_esn({"task": "order", **small, "leak_rate": 1.0})
    assert chance["test_errors"] > 0.4 * 500 and not chance["solved"]  # 4 classes


def test_the_long_range_settings_are_theirs_alone_and_the_length_is_checked():
    from bptt.run import ConfigError, ESNConfig

    config = ESNConfig(task="multiplication")
    assert (config.length, config.train_size, config.leak_rate) == (100, 4000, 0.02)
    assert ESNConfig(task="mackey-glass").input_density == 0.1
    with pytest.raises(ConfigError, match="length: is used only with tasks adding"):
        ESNConfig.from_dict({"task": "mackey-glass", "length": 100})
    with pytest.raises(ConfigError, match="reduce: is used only with task japanese-vowels"):
        ESNConfig.from_dict({"task": "order", "reduce": "last"})
    with pytest.raises(ConfigError, match="task order needs length >= 10"):
        ESNConfig.from_dict({"task": "order", "length": 5})


def test_the_reservoir_is_scored_on_the_test_set_of_a_training_run_of_its_seed(tmp_path):
    """The four ways compare on one test set: the ESN's is the one a `bptt train` run of
    the same task, length and seed scores (its test seed), and its summary file says
    what a training's does (metric, solved, baseline)."""
    from bptt.run import TrainConfig, test_set
    from bptt.run.esn import _esn
    from bptt.run.training import read_summary
    from bptt.tasks import make_task

    seen = {}
    original = make_task

    def recording(name, length):
        task = original(name, length)
        test = task.test_set

        def remembered(size, generator, **kwargs):
            seen["x"], seen["y"] = test(size, generator, **kwargs)
            return seen["x"], seen["y"]

        task.test_set = remembered
        return task

    _esn.make_task = recording
    try:
        run_esn({"task": "adding", "length": 20, "train_size": 100, "test_size": 64, "seed": 3})
    finally:
        _esn.make_task = original
    config = TrainConfig(task="adding", length=20, seed=3, test_size=64)
    x, y = test_set(config, make_task("adding", 20))
    assert torch.equal(seen["x"].float(), x) and torch.equal(seen["y"].float(), y)
    out = tmp_path / "run"
    run_esn({"task": "order", "length": 20, "train_size": 200, "out": str(out)})
    summary = read_summary(out)
    assert summary.metric == "test_error_rate" and summary.solved is not None
    assert summary.test_size == 1000 and summary.baseline_loss > 0


def test_a_run_directorys_table_is_one_of_its_files(tmp_path):
    """write_table writes only the run's own CSV files (no path out of the directory, not
    metrics.csv, which the loop appends to), with rows that share their keys."""
    from bptt.run import RunDirectory

    run_dir = RunDirectory(tmp_path / "run")
    try:
        for name in ("../x.csv", "/tmp/x.csv", "metrics.csv", "notes.csv"):
            with pytest.raises(ValueError, match="name must be one of"):
                run_dir.write_table(name, [{"step": 1}])
        with pytest.raises(ValueError, match="share their keys"):
            run_dir.write_table("free_run.csv", [{"step": 1}, {"t": 2}])
        run_dir.write_table("free_run.csv", [{"step": 1, "truth": 0.5}])
        assert (tmp_path / "run" / "free_run.csv").read_text().splitlines() == [
            "step,truth",
            "1,0.5",
        ]
    finally:
        run_dir.close()
    assert not (tmp_path / "x.csv").exists()
