"""Input that once ended in a traceback, a hang or a silently wrong page: sizes whose
product cannot fit, files that are not regular or not bounded, a malicious checkpoint,
a bench table that lists nothing or points outside its directory."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import bptt
from bptt.cli import app
from bptt.run import ConfigError, ESNConfig, RunDirectoryError, TrainConfig, write_report
from bptt.run.training._footprint import (
    MemoryNeed,
    available_memory,
    esn_memory,
    refuse_oversized,
    train_memory,
)
from bptt.run.training._io import FileTooLarge, read_bounded
from cli_output import exit_2_in_one_line as _one_error

runner = CliRunner()
RUN = {"task": "adding", "length": 8, "cell": "gru", "hidden": 8, "steps": 6, "threads": 1}
RUN.update({"checkpoint_every": 3, "test_size": 16, "log_every": 1})


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    bptt.train({**RUN, "out": str(out)})
    return out


# --- 11: sizes whose product cannot fit ---------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--hidden", "65536"], "hidden"),
        (["--length", "1000000", "--batch-size", "1000000"], "batch_size"),
        (["--test-size", "10000000", "--length", "1000000"], "test_size"),
    ],
)
def test_a_run_too_big_for_the_machine_is_refused_before_it_writes(
    tmp_path, flags, field, monkeypatch
):
    # 16 GiB available, whatever this machine has: the estimate refuses these
    monkeypatch.setattr(
        "bptt.run.training._footprint.available_memory", lambda device="cpu": 16 << 30
    )
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", *flags, "--steps", "1", "--out", str(out)])
    line = _one_error(result)
    assert f"error: {field}:" in line and "GiB available" in line and "needs at least" in line
    assert not out.exists()  # not even a directory holding only .lock


def test_an_esn_too_big_for_the_machine_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "bptt.run.training._footprint.available_memory", lambda device="cpu": 16 << 30
    )
    args = ["esn", "--units", "20000", "--density", "1", "--out", str(tmp_path / "e")]
    line = _one_error(runner.invoke(app, args))
    assert "units" in line and "needs about 17.9 GiB" in line and "16.0 GiB available" in line
    assert not (tmp_path / "e").exists()


def test_the_estimate_counts_what_the_sizes_multiply_to():
    config = TrainConfig.from_dict({"task": "adding", "length": 100, "cell": "lstm", "hidden": 64})
    need = dict((what, size) for what, _, size in train_memory(config, 2, 1).parts)
    weights = 4 * 64 * (2 + 64 + 2) + 1 * (64 + 1)  # gate blocks of W_ih, W_hh, biases; readout
    assert need["weights, gradients and optimizer state"] == weights * 4 * 4  # float32, Adam
    assert need["the states a training batch keeps for backward"] == 50 * 100 * 64 * 5 * 4
    stacked = dict((w, s) for w, _, s in train_memory(config, 2, 1, runs=3).parts)
    assert stacked["weights, gradients and optimizer state"] == 3 * weights * 16
    esn = ESNConfig.from_dict({"task": "mackey-glass", "units": 100})
    assert esn_memory(esn).total == 42 * 100 * 100 + esn.steps * 100 * 8 * 3 // 2


def test_a_run_that_fits_passes_and_the_refusal_names_the_largest_part():
    refuse_oversized(MemoryNeed((("small", "hidden", 1024),)))  # no error
    huge = MemoryNeed((("a", "hidden", 1), ("the big one", "batch_size and length", 1 << 62)))
    with pytest.raises(ConfigError, match=r"batch_size:.*the big one.*lower batch_size and length"):
        refuse_oversized(huge)
    assert 0 < available_memory() < 1 << 62


# --- 12: files that are not regular, or not bounded -----------------------------------------


def test_a_config_that_is_dev_zero_is_refused_at_once():
    result = runner.invoke(app, ["train", "--config", "/dev/zero", "--steps", "1"])
    assert "not a regular file" in _one_error(result)


def test_a_config_nested_thousands_deep_is_one_line(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    result = runner.invoke(app, ["train", "--config", str(deep)])
    assert "nests tables or arrays too deeply" in _one_error(result)


def test_a_bounded_read_refuses_larger_files_and_devices(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    assert read_bounded(big, 101) == b"x" * 101
    with pytest.raises(FileTooLarge, match="101 bytes, more than the 100"):
        read_bounded(big, 100)
    with pytest.raises(FileTooLarge, match="not a regular file"):
        read_bounded("/dev/zero", 1 << 30)


@pytest.mark.parametrize("name", ["metrics.csv", "diagnostics.jsonl"])
def test_a_run_file_linked_to_dev_zero_neither_hangs_report_nor_resume(tmp_path, finished, name):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to("/dev/zero")
    (run / "report.html").unlink(missing_ok=True)
    with pytest.warns(UserWarning, match="left out of the report: it is not a regular file"):
        write_report(run)  # the page, without what could not be read
    (run / "summary.json").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "bptt", "train", "--resume", str(run), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "symbolic link" in done.stderr, done.stderr


def test_a_resumed_run_reads_its_records_within_their_bound(tmp_path, finished, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "summary.json").unlink()
    size = (run / "metrics.csv").stat().st_size
    monkeypatch.setattr("bptt.run.training._rundir.RECORD_BYTES", size - 1)  # one byte too many
    with pytest.raises(RunDirectoryError, match=r"metrics\.csv.*more than the"):
        bptt.resume(run)


# --- 8: a bench table that lists nothing, or names a directory outside -----------------------


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ("", "lacks the column"),
        ("\x00\x01garbage,,\n1,2\n", "lacks the column"),
        ("group,task,length,method,seed,outcome,run_dir\n", "lists no runs"),
        ("group,task,length,method,seed,outcome,run_dir\nm,adding,x,rnn,0,solved,r\n", "length"),
        ("group,task,length,method,seed,outcome,run_dir\nm,adding,8,rnn,0,ok,/etc\n", "inside"),
        ("group,task,length,method,seed,outcome,run_dir\nm,adding,8,rnn,0,ok,../up\n", "inside"),
    ],
)
def test_report_refuses_a_bench_table_it_cannot_stand_behind(tmp_path, table, needle):
    (tmp_path / "results.csv").write_text(table)
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert needle in _one_error(result)
    assert not (tmp_path / "report.html").exists()


# --- 14: a malicious checkpoint -----------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_malicious_checkpoint_is_refused_with_torchs_reason_not_its_advice(
    tmp_path, finished, monkeypatch
):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    buffer = io.BytesIO()
    torch.save({"model": _Payload()}, buffer)
    (run / "model.pt").write_bytes(buffer.getvalue())
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["diagnose", str(run)])
    line = _one_error(result)
    assert "GLOBAL posix.system" in line or "GLOBAL os.system" in line
    assert "weights_only` set to `False`" not in line and "arbitrary code" not in line
    assert not (tmp_path / "PWNED").exists()
