"""What a newcomer trips over first: defaults the help shows, a copied config.toml that
names its run's directory, an echo state network's run given to train, a path that does
not exist, a file where the bench's directory goes, output read through a pipe."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from bptt.cli import app
from bptt.run import ConfigError, TrainConfig
from cli_output import exit_2_in_one_line as _one_error

runner = CliRunner()
TINY = ["--task", "adding", "--length", "6", "--cell", "gru", "--hidden", "4", "--steps", "3"]
TINY += ["--test-size", "16", "--threads", "1", "--no-progress"]


def test_the_help_shows_each_fields_default():
    text = " ".join(runner.invoke(app, ["train", "--help"]).output.split())
    for flag, default in (("hidden", 128), ("steps", 2000), ("lr", 0.003), ("batch-size", 50)):
        field = TrainConfig.flag_fields()[flag.replace("-", "_")]
        assert field.default == default
        start = text.index(f"--{flag} ")
        assert f"[default: {default}]" in text[start : start + 400], flag
    esn = " ".join(runner.invoke(app, ["esn", "--help"]).output.split())
    assert "[default: 0.1]" in esn  # density


def test_a_config_copied_from_a_run_can_be_run_without_output(tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", *TINY, "--out", str(out)]).exit_code == 0
    copied = tmp_path / "mine.toml"
    copied.write_text((out / "config.toml").read_text())
    refused = runner.invoke(app, ["train", "--config", str(copied), "--no-progress"])
    assert "already holds a run" in _one_error(refused)
    done = runner.invoke(app, ["train", "--config", str(copied), "--no-out", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "writes no files" in done.output
    both = runner.invoke(app, ["train", *TINY, "--no-out", "--out", str(tmp_path / "x")])
    assert "--no-out" in _one_error(both)


def test_an_esn_run_given_to_train_or_diagnose_is_named_as_such(tmp_path):
    out = tmp_path / "esn"
    done = runner.invoke(
        app,
        [
            "esn",
            "--units",
            "30",
            "--steps",
            "400",
            "--train-steps",
            "200",
            "--free-steps",
            "50",
            "--washout",
            "20",
            "--out",
            str(out),
        ],
    )
    assert done.exit_code == 0, done.output
    for args in (["train", "--resume", str(out)], ["diagnose", str(out)]):
        line = _one_error(runner.invoke(app, args))
        assert "echo state network's run" in line and "unknown key" not in line


def test_a_missing_run_directory_is_said_to_be_missing(tmp_path):
    for args in (
        ["train", "--resume", str(tmp_path / "nope")],
        ["diagnose", str(tmp_path / "nope")],
    ):
        assert "does not exist" in _one_error(runner.invoke(app, args))


def test_bench_out_naming_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    line = _one_error(runner.invoke(app, ["bench", "--out", str(tmp_path / "afile")]))
    assert "is a file" in line and "Errno" not in line


def test_attractor_never_replaces_an_image_unasked(tmp_path):
    (tmp_path / "attractor.png").write_bytes(b"my picture")
    args = ["attractor", "--out", str(tmp_path), "--steps", "2", "--resolution", "5"]
    assert "--overwrite" in _one_error(runner.invoke(app, args))
    assert (tmp_path / "attractor.png").read_bytes() == b"my picture"
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert (tmp_path / "attractor.png").read_bytes() != b"my picture"


def test_numpy_numbers_are_numbers_to_the_config():
    config = TrainConfig.from_dict({"hidden": np.int64(16), "lr": np.float32(0.5)})
    assert config.hidden == 16 and type(config.hidden) is int and config.optimizer.lr == 0.5
    with pytest.raises(ConfigError, match="hidden: must be an integer"):
        TrainConfig.from_dict({"hidden": np.float64(16.5)})


def test_fast_engine_for_a_cell_without_one_is_refused_in_the_config():
    with pytest.raises(ConfigError, match="engine: cell skip has no fast engine"):
        TrainConfig.from_dict({"engine": "fast", "cell": "skip"})
    assert TrainConfig.from_dict({"engine": "fast", "cell": "lstm"}).engine == "fast"


def test_verdict_lines_are_whole_when_piped(tmp_path):
    out = tmp_path / "run"
    flags = ["--task", "adding", "--length", "6", "--cell", "gru", "--hidden", "4"]
    flags += ["--steps", "4", "--test-size", "16", "--threads", "1", "--no-progress"]
    done = subprocess.run(
        [sys.executable, "-m", "bptt", "train", *flags, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "40", "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    verdict = [i for i, line in enumerate(lines) if line.startswith("verdict:")]
    assert verdict, done.stdout
    # every line after the verdict starts as the printout starts its lines: none is the
    # tail of a wrapped one
    for line in lines[verdict[0] + 1 :]:
        assert line.startswith(
            ("  because", "  on the way", "  remedy:", "    ", "run directory")
        ), line


def test_seeds_title_their_own_table(tmp_path):
    out = tmp_path / "seeds"
    flags = [f for f in TINY if f not in ("--threads", "1")]  # --seeds divides the cores
    result = runner.invoke(
        app, ["train", *flags, "--seeds", "0,1", "--out", str(out), "--no-report"]
    )
    assert result.exit_code == 0, result.output
    assert "bptt train --seeds" in result.output and "bptt bench: leaderboard" not in result.output
