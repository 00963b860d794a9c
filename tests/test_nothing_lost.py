"""Nothing of a user's is lost: no write or delete through a link planted in a run
directory, ``--overwrite`` removes only the files a run writes (and only once the new
run starts), a plain run checkpoints by default and resumes bit for bit after SIGKILL,
and ``--resume`` never overwrites a run's record to start again."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bptt
from bptt.run import Checkpoints, ConfigError, RunDirectory, RunDirectoryError, TrainConfig
from cli_output import one_error_line as _error_line
from run_files import assert_same_run

RUN = {"task": "adding", "length": 8, "cell": "lstm", "hidden": 8, "steps": 30, "threads": 1}
RUN.update({"checkpoint_every": 10, "log_every": 2, "eval_every": 10, "test_size": 50})
FLAGS = ["--task", "adding", "--length", "8", "--cell", "lstm", "--hidden", "8", "--steps", "30"]
FLAGS += ["--checkpoint-every", "10", "--log-every", "2", "--eval-every", "10"]
FLAGS += ["--test-size", "50", "--threads", "1", "--no-progress"]


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bptt", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


def _victim(tmp_path: Path) -> tuple[Path, bytes]:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"a user's file\n")
    return victim, victim.read_bytes()


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` (links not followed; the lock, which only
    says who holds the directory, left out), by relative name."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != ".lock":
            found[str(path.relative_to(folder))] = path.read_bytes()
    return found


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run, to copy where a test needs an earlier run."""
    out = tmp_path_factory.mktemp("finished") / "run"
    bptt.train({**RUN, "out": str(out)})
    return out


def _copy_run(source: Path, where: Path) -> Path:
    import shutil

    shutil.copytree(source, where)
    (where / ".lock").unlink(missing_ok=True)
    return where


# --- 1: the lock file --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["fresh --out", "--resume"])
def test_a_lock_file_linked_to_a_users_file_is_refused_and_the_file_untouched(
    tmp_path, finished, how
):
    victim, before = _victim(tmp_path)
    if how == "fresh --out":
        run = tmp_path / "run"
        run.mkdir()
        (run / ".lock").symlink_to("../victim.txt")
        done = _cli("train", *FLAGS, "--out", str(run))
    else:
        run = _copy_run(finished, tmp_path / "run")
        (run / "summary.json").unlink()  # unfinished: there is something to resume
        (run / ".lock").symlink_to("../victim.txt")
        done = _cli("train", "--resume", str(run), "--no-progress")
    assert done.returncode == 2
    line = _error_line(done.stderr)
    assert ".lock" in line and "symbolic link" in line
    assert victim.read_bytes() == before
    assert (run / ".lock").is_symlink()  # the link itself is the user's to remove


@pytest.mark.parametrize("name", ["metrics.csv", "diagnostics.jsonl", "summary.json", "model.pt"])
def test_no_file_of_a_run_is_written_through_a_link(tmp_path, name):
    victim, before = _victim(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / name).symlink_to("../victim.txt")
    with pytest.raises(RunDirectoryError, match="symbolic link"):
        bptt.train({**RUN, "out": str(run)}, overwrite=True)
    assert victim.read_bytes() == before


def test_appends_and_locks_refuse_a_link_planted_after_the_directory_was_opened(tmp_path):
    from bptt.run.training._io import append_text, lock_file

    victim, before = _victim(tmp_path)
    link = tmp_path / "metrics.csv"
    link.symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        append_text(link, "1,2\n")
    with pytest.raises(OSError, match="symbolic link"):
        lock_file(link)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        append_text(fifo, "1,2\n")
    assert victim.read_bytes() == before


# --- 2, 3: --overwrite ----------------------------------------------------------------------


def test_overwrite_never_deletes_through_a_linked_checkpoints_folder(tmp_path, finished):
    important = tmp_path / "important"
    important.mkdir()
    for name in ("thesis.tex", "step-000000010.pt", "step-000000010.pt.sha256"):
        (important / name).write_text(f"the user's {name}\n")
    before = _snapshot(important)
    run = _copy_run(finished, tmp_path / "run")
    for old in (run / "checkpoints").iterdir():
        old.unlink()
    (run / "checkpoints").rmdir()
    (run / "checkpoints").symlink_to(important)
    earlier = _snapshot(run)
    done = _cli("train", *FLAGS, "--out", str(run), "--overwrite")
    assert done.returncode == 2
    line = _error_line(done.stderr)
    assert "checkpoints" in line and "symbolic link" in line
    assert _snapshot(important) == before
    assert _snapshot(run) == earlier  # the earlier run is whole too


def test_overwrite_removes_only_the_files_a_run_writes(tmp_path, finished):
    run = _copy_run(finished, tmp_path / "run")
    (run / "checkpoints" / "mine").mkdir()  # a subdirectory: made the old code fail half-way
    (run / "checkpoints" / "mine" / "notes.txt").write_text("keep\n")
    (run / "checkpoints" / "step-9.pt").write_text("not a name a run writes\n")
    (run / "notes.txt").write_text("keep too\n")
    (run / "report.html").write_text("<p>the old run's page</p>\n")
    old_checkpoints = {p.name for p in (run / "checkpoints").glob("step-0*")}
    bptt.train({**RUN, "steps": 20, "seed": 1, "out": str(run)}, overwrite=True)
    assert (run / "checkpoints" / "mine" / "notes.txt").read_text() == "keep\n"
    assert (run / "checkpoints" / "step-9.pt").exists() and (run / "notes.txt").exists()
    assert not (run / "report.html").exists()  # it described the old run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps_done"] == 20 and TrainConfig.saved_in(run).seed == 1
    steps = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().split()[1:]]
    assert max(steps) == 20  # no row of the old 30-step run is left
    new_checkpoints = {p.name for p in (run / "checkpoints").glob("step-0*")}
    assert "step-000000030.pt" in old_checkpoints and "step-000000030.pt" not in new_checkpoints


def test_overwrite_leaves_the_earlier_run_whole_when_the_new_one_cannot_start(
    tmp_path, finished, monkeypatch
):
    run = _copy_run(finished, tmp_path / "run")
    earlier = _snapshot(run)

    def cannot_build(*args, **kwargs):
        raise MemoryError("no room for the model")

    monkeypatch.setattr("bptt.run.training._loop.initial_model", cannot_build)
    with pytest.raises(MemoryError):
        bptt.train({**RUN, "seed": 1, "out": str(run)}, overwrite=True)
    assert _snapshot(run) == earlier


def test_overwrite_removes_the_old_tensorboard_events_only(tmp_path, finished):
    pytest.importorskip("tensorboard")
    run = _copy_run(finished, tmp_path / "run")
    events = run / "tensorboard"
    events.mkdir()
    (events / "events.out.tfevents.1.old.1.0").write_bytes(b"old events")
    (events / "projector_config.pbtxt").write_text("the user's\n")
    bptt.train({**RUN, "steps": 4, "out": str(run), "tensorboard": True}, overwrite=True)
    names = {p.name for p in events.iterdir()}
    assert "events.out.tfevents.1.old.1.0" not in names and "projector_config.pbtxt" in names
    assert any(n.startswith("events.out.tfevents.") for n in names)  # the new run's


def test_a_directory_where_a_run_file_should_be_is_refused_by_name(tmp_path):
    run = tmp_path / "run"
    (run / "metrics.csv").mkdir(parents=True)
    with pytest.raises(RunDirectoryError, match=r"metrics\.csv.*not a regular file"):
        RunDirectory(run, overwrite=True)


# --- 4: checkpoints by default, SIGKILL, --resume never starts again silently ------------


def test_a_plain_run_checkpoints_by_default():
    config = TrainConfig.from_dict({"task": "adding"})
    assert config.checkpoint_every > 0 and config.checkpoint_every_s > 0


def _train_process(*args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "bptt", "train", *args],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=env,
        )


def test_a_default_run_killed_at_an_arbitrary_moment_resumes_bit_for_bit(tmp_path):
    # the default checkpoint settings, but for a clock short enough to checkpoint at
    # steps no schedule names (the clock's checkpoints are what a short run relies on)
    flags = ["--task", "adding", "--length", "8", "--cell", "gru", "--hidden", "8"]
    flags += ["--steps", "260", "--threads", "1", "--no-progress", "--test-size", "50"]
    flags += ["--log-every", "5", "--eval-every", "50"]
    log = tmp_path / "stderr.log"
    reference = tmp_path / "reference"
    assert _train_process(*flags, "--out", str(reference), log=log).wait(timeout=300) == 0
    killed = tmp_path / "killed"
    process = _train_process(*flags, "--checkpoint-every-s", "0.02", "--out", str(killed), log=log)
    while process.poll() is None and not any((killed / "checkpoints").glob("*.sha256")):
        time.sleep(0.005)
    time.sleep(random.Random(3).uniform(0.05, 0.4))
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "summary.json").exists()
    resumed = _cli("train", "--resume", str(killed), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(killed, reference)


def test_sigint_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    flags = [*FLAGS[:-1], "--steps", "100000", "--out", str(out)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    # A shell starts a background job (CI's, a `make test &`) with SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler: the child restores it, as a job
    # in a terminal has it.
    restore = (
        "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "runpy.run_module('bptt', run_name='__main__', alter_sys=True)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", restore, "train", *flags, "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        while not any((out / "checkpoints").glob("step-000000010.pt.sha256")):
            assert process.poll() is None
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:  # never leave it running (its ResourceWarning would fail another test)
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130
    line = _error_line(stderr)
    step = Checkpoints(out / "checkpoints").newest_intact_step()
    assert f"last checkpoint is step {step}" in line and f"bptt train --resume {out}" in line


def test_a_rollback_after_a_resume_from_a_clock_checkpoint_goes_where_the_uninterrupted_run_did(
    tmp_path,
):
    """A checkpoint of the clock is no roll-back point: a run resumed from one rolls
    back to the last scheduled checkpoint, as the run that was never stopped does."""
    config = {"task": "adding", "length": 8, "cell": "gru", "hidden": 8, "steps": 50}
    config.update({"checkpoint_every": 10, "nonfinite_patience": 3, "log_every": 1})
    config.update({"threads": 1, "test_size": 50, "eval_every": 10})

    def poisoner(stop_at: int | None = None):
        seen: set[int] = set()

        def poison(step, model):  # steps 30-32 get NaN gradients, the first time only
            if step == stop_at and step not in seen:
                seen.add(step)
                raise KeyboardInterrupt
            if 30 <= step <= 32 and step not in seen:
                next(model.parameters()).grad.fill_(math.nan)
            seen.add(step)

        return poison

    reference = tmp_path / "reference"
    bptt.train({**config, "checkpoint_every_s": 0, "out": str(reference)}, on_gradients=poisoner())
    assert json.loads((reference / "summary.json").read_text())["rollbacks"] == 1
    out = tmp_path / "run"
    poison = poisoner(stop_at=29)
    with pytest.raises(KeyboardInterrupt):  # a clock checkpoint after every step
        bptt.train({**config, "checkpoint_every_s": 1e-9, "out": str(out)}, on_gradients=poison)
    assert Checkpoints(out / "checkpoints").newest_intact_step() == 28  # not a scheduled one
    bptt.resume(out, on_gradients=poison)
    assert json.loads((out / "summary.json").read_text())["rollbacks"] == 1
    assert_same_run(out, reference)


def test_resume_refuses_to_start_a_logged_run_again_without_restart(tmp_path, finished):
    run = _copy_run(finished, tmp_path / "run")
    (run / "summary.json").unlink()
    for path in (run / "checkpoints").iterdir():
        path.unlink()
    logged = (run / "metrics.csv").read_bytes()
    with pytest.raises(ConfigError, match="--restart"):
        bptt.resume(run)
    assert (run / "metrics.csv").read_bytes() == logged
