"""The command line: errors exit 2 with the field named; the acceptance training run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt.run
from bptt.cli import app
from bptt.diagnose import RUN_VERDICTS
from cli_output import exit_2_in_one_line as _exit_2_in_one_line

runner = CliRunner()
TINY = ["--task", "adding", "--length", "6", "--cell", "gru", "--hidden", "4", "--steps", "5"]
TINY += ["--test-size", "16", "--threads", "1", "--no-progress"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--length", "0"], "length"),
        (["--cell", "cnn"], "cell"),
        (["--lr", "-1"], "lr"),
        (["--lenght", "5"], "--lenght"),
        (["--length", "five"], "--length"),
    ],
)
def test_bad_flags_exit_2_without_traceback(args, needle):
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


def test_config_file_and_flags(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('task = "copy"\nlength = 3\ncell = "rnn"\nhidden = 5\nsteps = 7\n')
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--config", str(config), "--steps", "4", *TINY[10:]])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["train", "--config", str(config), "--steps", "3", "--out", str(out), *TINY[10:]]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["task"], summary["length"], summary["steps"]) == ("copy", 3, 3)

    config.write_text("lenght = 3\n")
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 2 and "lenght: unknown key" in result.output


def test_occupied_out_exits_2(tmp_path):
    assert runner.invoke(app, ["train", *TINY, "--out", str(tmp_path)]).exit_code == 0
    result = runner.invoke(app, ["train", *TINY, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "already holds a run" in result.output


@pytest.mark.slow
def test_lstm_solves_adding_at_length_50(tmp_path):
    """The foundation's acceptance run, as a user types it: an LSTM (the tuned chrono recipe)
    solves adding at T=50, ending at its first solved evaluation (step 400 of 1,500
    here; the default LSTM recipe needed 1,300)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bptt", "train", "--task", "adding", "--length", "50"]
    cmd += ["--method", "lstm-chrono-adam", "--steps", "1500", "--seed", "0"]
    cmd += ["--out", str(out), "--no-progress"]
    cmd += ["--stop-when-solved"]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["solved"] is True
    assert summary["final_loss"] < 0.01


def test_an_unusable_out_exits_2(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    result = runner.invoke(app, ["train", *TINY, "--out", str(blocker / "run")])
    assert result.exit_code == 2 and "out:" in result.output


def test_diagnose_a_run_as_a_table_and_as_json(tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", *TINY, "--out", str(out)]).exit_code == 0
    table = runner.invoke(app, ["diagnose", str(out)])
    assert table.exit_code == 0 and "verdict:" in table.output and "gamma" in table.output
    as_json = runner.invoke(app, ["diagnose", str(out), "--json", "--probe", "4"])
    found = json.loads(as_json.output)
    assert found["verdict"] in RUN_VERDICTS and found["reasons"]
    assert len(found["norms"]) == 6 and found["remedies"] is not None
    missing = runner.invoke(app, ["diagnose", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_attractor_writes_its_figure(tmp_path):
    figure = tmp_path / "a.png"
    result = runner.invoke(app, ["attractor", "--out", str(figure), "--resolution", "21"])
    assert result.exit_code == 0, result.output
    assert figure.stat().st_size > 1000 and "boundary" in result.output


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"bptt {version('bptt')}"


def test_a_run_without_out_says_it_writes_nothing(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bptt", "train", *TINY],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "no --out given: this run writes no files" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_attractor_refuses_bad_output_paths_in_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    small = ["--resolution", "5", "--steps", "3"]
    for out in ("foo.txt", str(tmp_path / "afile" / "x.png"), "/proc/x.png", "/dev/null"):
        _exit_2_in_one_line(runner.invoke(app, ["attractor", "--out", out, *small]))
    # a directory gets attractor.png inside it; a bare name gets .png, and says so
    done = runner.invoke(app, ["attractor", "--out", str(tmp_path), *small])
    assert done.exit_code == 0 and f"figure: {tmp_path / 'attractor.png'}" in done.output
    assert (tmp_path / "attractor.png").stat().st_size > 1000
    assert not tmp_path.with_suffix(".png").exists()
    done = runner.invoke(app, ["attractor", "--out", str(tmp_path / "plain"), *small])
    assert done.exit_code == 0 and (tmp_path / "plain.png").is_file()
    assert f"figure: {tmp_path / 'plain.png'}" in done.output


cli_numbers = st.sampled_from(["-3", "0", "1", "2", "5", "1002", "10001", "100000", "x", "1.5"])


@settings(max_examples=40, deadline=None)
@given(steps=cli_numbers, res=cli_numbers)
def test_attractor_answers_any_numbers_with_a_figure_or_one_line(tmp_path_factory, steps, res):
    out = tmp_path_factory.mktemp("attractor") / "a.png"
    args = ["attractor", "--out", str(out), "--steps", steps, "--resolution", res]
    valid = steps in ("1", "2", "5", "1002") and res in ("2", "5")
    result = runner.invoke(app, args)
    if valid:
        assert result.exit_code == 0, result.output
        assert out.is_file()
    else:
        assert "Traceback" not in result.output and result.exit_code == 2, result.output


def _run_dir_with(tmp_path, model_pt: object | None = None, config: str | None = None):
    """A finished tiny run, then its files replaced as given."""
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", *TINY, "--out", str(out)]).exit_code == 0
    if model_pt is not None:
        if isinstance(model_pt, bytes):
            (out / "model.pt").write_bytes(model_pt)
        else:
            torch.save(model_pt, out / "model.pt")
    if config is not None:
        (out / "config.toml").write_text(config)
    return out


@pytest.mark.parametrize(
    ("model_pt", "config", "needle"),
    [
        ([1, 2, 3], None, "holds a list, not a model's state_dict"),
        (torch.zeros(3), None, "holds a Tensor"),
        ({"cell.weight_hh": torch.zeros(2, 2)}, None, "does not fit the model"),
        (b"\x00garbage", None, "does not load"),
        (b"", None, "does not load"),
        (None, "task = [", "not valid TOML"),
        (None, 'task = "nonsense"\n', "task"),
        (None, 'device = "cuda:7"\n', "device"),
    ],
)
def test_diagnose_refuses_a_damaged_run_in_one_line(tmp_path, model_pt, config, needle):
    result = runner.invoke(app, ["diagnose", str(_run_dir_with(tmp_path, model_pt, config))])
    _exit_2_in_one_line(result)
    assert needle in result.output


def test_diagnose_refuses_bad_arguments_in_one_line(tmp_path):
    out = _run_dir_with(tmp_path)
    (tmp_path / "afile").write_text("x")
    for args in (
        [str(tmp_path / "missing")],
        [str(tmp_path / "afile")],
        [str(out), "--probe", "0"],
        [str(out), "--probe", "-4"],
        [str(out), "--dependency-length", "0"],
        [str(out), "--probe", "x"],
    ):
        result = runner.invoke(app, ["diagnose", *args])
        assert "Traceback" not in result.output and result.exit_code == 2, result.output


def test_diagnose_of_a_run_with_nan_weights_says_it_diverged(tmp_path):
    out = _run_dir_with(tmp_path)
    state = torch.load(out / "model.pt", weights_only=True)
    state["cells.0.weight_hh"][0, 0] = float("nan")
    torch.save(state, out / "model.pt")
    result = runner.invoke(app, ["diagnose", str(out), "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["verdict"] == "exploding" and "cells.0.weight_hh" in found["reasons"][0]


def test_train_help_at_80_columns_names_every_task_cell_and_recipe():
    import re

    from bptt.cells import cell_names
    from bptt.run import RECIPES
    from bptt.tasks import TASKS

    result = runner.invoke(app, ["train", "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    text = re.sub(r"-\s+", "-", " ".join(result.output.split()))  # undo the wrapping
    for name in (*TASKS, *cell_names(), *RECIPES):
        assert re.search(rf"[ ,]{re.escape(name)}[,.]", text), name


def test_a_name_from_a_registry_is_refused_with_the_names_it_accepts():
    result = runner.invoke(app, ["train", "--cell", "cnn", "--steps", "1"])
    _exit_2_in_one_line(result)
    assert "cell: must be one of rnn, rnn-relu, lstm" in result.output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux")
def test_the_application_keeps_freed_memory_for_the_next_step(monkeypatch):
    # RSS after freeing a 256 MB tensor: given back under glibc's defaults, kept after
    # keep_freed_memory() (what bptt's command line and its bench workers call)
    probe = (  # the module alone (no torch, no package import): a fast subprocess
        "import sys, importlib.util as u\n"
        "spec = u.spec_from_file_location('memory', sys.argv[2])\n"
        "memory = u.module_from_spec(spec); spec.loader.exec_module(memory)\n"
        "kept = memory.keep_freed_memory() if sys.argv[1] == 'keep' else False\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
        "x = bytearray(b'\\x01') * 2**28; before = rss(); del x\n"  # 256 MB, every page written
        "print(kept, before - rss())\n"
    )
    module = str(Path(bptt.run.__file__).parent / "training" / "_memory.py")
    dropped = {}
    for mode in ("default", "keep"):
        out = subprocess.run(
            [sys.executable, "-c", probe, mode, module], capture_output=True, text=True, check=True
        ).stdout.split()
        dropped[mode] = (out[0], float(out[1]))
    assert dropped["default"][0] == "False" and dropped["default"][1] > 200  # MB given back
    assert dropped["keep"][0] == "True" and dropped["keep"][1] < 16  # kept for reuse
    from bptt.run import keep_freed_memory

    monkeypatch.setenv("BPTT_MALLOC", "default")
    assert keep_freed_memory() is False  # the opt-out: malloc left as it is


# the flat keys of bptt train before the nested config (commit 998cda6), each still a flag
_FLAT_KEYS_BEFORE = """
method task length cell hidden lstm_init layers bidirectional dropout steps batch_size lr
lr_recurrent weight_decay optimizer lr_schedule lr_end_factor momentum rmsprop_alpha
rebase_every hf_damping hf_max_cg hf_mu hf_curvature_fraction hf_preconditioner clip
clip_norm clip_value clip_percentile clip_history clip_z clip_alpha clip_warmup
clip_calibrate_steps clip_quantile clip_step_norm clip_step_value nonfinite monitor
spike_window spike_z diagnose_every tensorboard probe_size stop_when_solved
validation_share time_limit_s checkpoint_every checkpoint_every_s keep_checkpoints
nonfinite_patience rollback_lr_factor tbptt_k1 tbptt_k2 seed test_size eval_every
log_every engine device dtype flush_denormal threads out
""".split()


def test_train_help_lists_every_flat_key_with_its_description():
    import re

    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0, result.output
    text = re.sub(r"-\s+", "-", " ".join(result.output.split()))  # undo the wrapping
    fields = bptt.run.TrainConfig.flag_fields()
    added = {"clip_agc_ratio", "clip_agc_eps", "early_momentum", "early_momentum_steps"}
    assert set(fields) == {*_FLAT_KEYS_BEFORE, *added}
    for key, field in fields.items():
        flag = re.escape("--" + key.replace("_", "-"))
        described = re.sub(r"-\s+", "-", " ".join(field.description.split()))
        option = rf"{flag}(?: ?/ ?--no-[a-z-]+)?(?: [A-Z]+)? {re.escape(described[:50])}"
        assert re.search(option, text), key
    assert "calibrate or agc (adaptive" in text  # the kinds, from the clip models


def test_clip_agc_from_the_command_line(tmp_path):
    out = tmp_path / "agc"
    args = ["train", *TINY, "--clip", "agc", "--clip-agc-ratio", "0.05", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (
        '[clip]\nkind = "agc"\nclipping = 0.05\neps = 0.001\n' in (out / "config.toml").read_text()
    )
    import csv

    with open(out / "metrics.csv", newline="") as handle:
        thresholds = [float(row["clip_threshold"]) for row in csv.DictReader(handle)]
    assert thresholds and all(0 < t < float("inf") for t in thresholds)  # the units' bounds
    result = runner.invoke(app, ["train", *TINY, "--clip-agc-ratio", "0.05"])
    line = _exit_2_in_one_line(result)
    assert "clip_agc_ratio: is used only with clip agc, not none" in line
