"""Faults a run must survive without losing work: a second writer on its directory, a
full disk on any write, a read-only directory, checkpoints that are all corrupt."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import bptt
from bptt.run import (
    Checkpoints,
    ConfigError,
    RunDirectory,
    RunDirectoryBusy,
    RunDirectoryError,
    RunStopped,
)
from cli_output import one_error_line as _one_error_line
from run_files import assert_same_run, params

RUN = {"task": "adding", "length": 8, "cell": "lstm", "hidden": 8, "steps": 40, "threads": 1}
RUN.update({"checkpoint_every": 10, "log_every": 2, "eval_every": 10, "test_size": 50})
FLAGS = ["--task", "adding", "--length", "8", "--cell", "lstm", "--hidden", "8", "--steps", "40"]
FLAGS += ["--checkpoint-every", "10", "--log-every", "2", "--eval-every", "10"]
FLAGS += ["--test-size", "50", "--threads", "1", "--no-progress"]


def _cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bptt", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The run uninterrupted, to compare every faulted-and-resumed run with."""
    out = tmp_path_factory.mktemp("reference") / "run"
    bptt.train({**RUN, "out": str(out)})
    return out


# --- one writer per run directory ---------------------------------------------------------


def test_a_second_writer_is_refused_and_the_lock_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from bptt.run import RunDirectory; "
            "RunDirectory(sys.argv[1]); print('locked', flush=True); time.sleep(600)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirectoryBusy, match="being written by another run"):
            bptt.train({**RUN, "out": str(tmp_path)})
        with pytest.raises(RunDirectoryBusy):
            RunDirectory(tmp_path, resume=True)
        assert not (tmp_path / "config.toml").exists()  # the refused run wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up: the OS releases the lock
        holder.wait()
        holder.stdout.close()
    bptt.train({**RUN, "steps": 4, "out": str(tmp_path)})
    assert json.loads((tmp_path / "summary.json").read_text())["steps_done"] == 4


def test_in_one_process_a_directory_opens_once_until_closed(tmp_path):
    first = RunDirectory(tmp_path)
    with pytest.raises(RunDirectoryBusy):
        RunDirectory(tmp_path, overwrite=True)
    first.close()
    first.close()  # idempotent
    RunDirectory(tmp_path).close()


def test_two_runs_started_at_once_on_one_directory_exactly_one_runs(tmp_path):
    out = tmp_path / "run"
    # the winner trains for a few seconds, long past the other's start-up skew
    common = [*FLAGS, "--steps", "100000", "--time-limit-s", "4", "--out", str(out)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    starts = [
        subprocess.Popen(
            [sys.executable, "-m", "bptt", "train", *common, "--hidden", hidden],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for hidden in ("8", "16")
    ]
    outcomes = [(p.communicate(timeout=300)[1], p.returncode)[::-1] for p in starts]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 2], outcomes
    refused = next(stderr for code, stderr in outcomes if code == 2)
    assert "being written by another run" in _one_error_line(refused)
    hidden = json.loads((out / "summary.json").read_text())["hidden"]
    assert f"hidden = {hidden}\n" in (out / "config.toml").read_text()
    assert params(out)["cells.0.weight_hh"].shape == (4 * hidden, hidden)


# --- a full disk, injected on every write path --------------------------------------------

# Every write of a run directory goes through these (checked below against a real
# full file system as well).
WRITERS = (
    ("bptt.run.training._rundir", "append_text"),
    ("bptt.run.training._rundir", "atomic_write_text"),
    ("bptt.run.training._rundir", "atomic_torch_save"),
    ("bptt.run.training._checkpoint", "atomic_write_bytes"),
    ("bptt.run.training._checkpoint", "atomic_write_text"),
)


class _Disk:
    """Counts the run directory's writes by file; from write number ``full_from`` on,
    every write fails with ENOSPC, as a full disk does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, full_from: int | None = None) -> None:
        self.full_from, self.written = full_from, []
        for module_name, name in WRITERS:
            module = sys.modules[module_name]
            monkeypatch.setattr(module, name, self._wrap(getattr(module, name)))

    def _wrap(self, write):
        def faulty(*args, **kwargs):
            path = next(Path(a) for a in args if isinstance(a, (str, Path)))
            self.written.append(path.name)
            if self.full_from is not None and len(self.written) >= self.full_from:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return write(*args, **kwargs)

        return faulty


def _writes_of_a_clean_run(tmp_path_factory) -> list[str]:
    with pytest.MonkeyPatch.context() as patch:
        disk = _Disk(patch)
        bptt.train({**RUN, "out": str(tmp_path_factory.mktemp("count") / "run")})
    return disk.written


def _first(writes: list[str], suffix: str, after: int = 0) -> int:
    """1-based number of the first write to a file ending in suffix, after write ``after``."""
    return next(i + 1 for i, name in enumerate(writes) if i >= after and name.endswith(suffix))


@pytest.fixture(scope="module")
def full_from_cases(tmp_path_factory) -> dict[str, int]:
    writes = _writes_of_a_clean_run(tmp_path_factory)
    middle = len(writes) // 2
    return {
        "config.toml": _first(writes, "config.toml"),
        "first checkpoint": _first(writes, ".pt"),
        "its checksum": _first(writes, ".sha256"),
        "first row": _first(writes, "metrics.csv"),
        "a row mid-run": _first(writes, "metrics.csv", middle),
        "a checkpoint mid-run": _first(writes, ".pt", middle),
        "model.pt": _first(writes, "model.pt"),
        "summary.json": _first(writes, "summary.json"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "config.toml",
        "first checkpoint",
        "its checksum",
        "first row",
        "a row mid-run",
        "a checkpoint mid-run",
        "model.pt",
        "summary.json",
    ],
)
def test_a_disk_full_from_any_write_on_stops_cleanly_and_the_run_resumes_bitwise(
    tmp_path, monkeypatch, reference, full_from_cases, case
):
    out = tmp_path / "run"
    with monkeypatch.context() as patch, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # a failed checkpoint is a warning; training goes on
        _Disk(patch, full_from=full_from_cases[case])
        if case == "config.toml":  # nothing trained yet: refused at once
            with pytest.raises(RunDirectoryError, match=r"config\.toml: No space left"):
                bptt.train({**RUN, "out": str(out)})
        else:
            with pytest.raises(RunStopped) as stopped:
                bptt.train({**RUN, "out": str(out)})
    if case == "config.toml":  # nothing was left that makes the directory look taken
        bptt.train({**RUN, "out": str(out)})
        assert_same_run(out, reference)
        return
    message = str(stopped.value)
    assert "\n" not in message and "No space left on device" in message
    assert all("\n" not in str(w.message) for w in caught)
    newest = Checkpoints(out / "checkpoints").newest_intact_step()
    if case in ("first checkpoint", "its checksum"):  # none written, and no half left
        assert newest is None and not any((out / "checkpoints").iterdir())
        assert "no checkpoint written" in message and "again from step 0" in message
    else:
        assert (
            f"last checkpoint is step {newest}: make room, then resume with `bptt train" in message
        )
    assert "--resume" in message
    assert not (out / "model.pt").exists() or case == "summary.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "training it again from step 0", where it is
        bptt.resume(out)  # the disk has room again
    assert_same_run(out, reference)


def test_a_cut_short_row_is_dropped_when_the_run_resumes(tmp_path, reference):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    for name in ("summary.json", "model.pt"):
        (out / name).unlink()
    metrics = out / "metrics.csv"
    metrics.write_text(metrics.read_text() + "41,0.12")  # half a row, as a crash leaves it
    Checkpoints(out / "checkpoints").paths()[0].unlink()  # resume from step 30
    bptt.resume(out)
    assert_same_run(out, reference)


def _mount_namespace() -> bool:
    """Whether this machine lets an unprivileged process mount a tmpfs of its own."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null"],
        capture_output=True,
    )
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(
    not _mount_namespace(), reason="needs unshare -rm to mount a small tmpfs"
)


def _in_own_file_system(script: str, tmp_path: Path) -> str:
    """Run a shell script with $MNT a 4 MiB tmpfs of its own; returns what it printed."""
    prelude = f"""
set -u
MNT=$(mktemp -d -p {tmp_path})
mount -t tmpfs -o size=4m tmpfs "$MNT"
export PYTHONWARNINGS=ignore
"""
    done = subprocess.run(
        ["unshare", "-rm", "bash", "-c", prelude + script],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BPTT": sys.executable},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_mounts
def test_a_disk_that_really_fills_mid_run_stops_it_cleanly_and_it_resumes_bitwise(tmp_path):
    reference = tmp_path / "reference"
    bptt.train({**RUN, "steps": 300, "out": str(reference)})
    # once step 10's checkpoint is written, another program fills the disk to the last byte
    script = f"""
"$BPTT" -m bptt train {" ".join(FLAGS)} --steps 300 --out "$MNT/run" \
    2> "{tmp_path}/stopped.txt" &
run=$!
until [ -e "$MNT/run/checkpoints/step-000000010.pt.sha256" ] || ! kill -0 $run 2>/dev/null
do sleep 0.005; done
cat /dev/zero > "$MNT/ballast" 2>/dev/null
wait $run
echo "stopped with $?"
rm "$MNT/ballast"
"$BPTT" -m bptt train --resume "$MNT/run" --no-progress 2> "{tmp_path}/resumed.txt"
echo "resumed with $?"
cp -r "$MNT/run" "{tmp_path}/run"
"""
    printed = _in_own_file_system(script, tmp_path)
    assert "stopped with 1" in printed and "resumed with 0" in printed, printed
    line = _one_error_line((tmp_path / "stopped.txt").read_text())
    assert "No space left on device" in line and "make room, then resume with" in line
    assert_same_run(tmp_path / "run", reference)


@needs_mounts
def test_resuming_on_a_read_only_file_system_is_one_line_and_exit_2(tmp_path):
    script = f"""
"$BPTT" -m bptt train {" ".join(FLAGS)} --steps 20 --out "$MNT/run" >/dev/null 2>&1
mount -o remount,ro "$MNT"
"$BPTT" -m bptt train --resume "$MNT/run" --steps 40 --no-progress 2> "{tmp_path}/err.txt"
echo "resumed with $?"
"""
    printed = _in_own_file_system(script, tmp_path)
    assert "resumed with 2" in printed, printed
    assert "Read-only file system" in _one_error_line((tmp_path / "err.txt").read_text())


# --- corrupt checkpoints ------------------------------------------------------------------


def test_all_checkpoints_corrupt_is_refused_unless_restart_is_asked(tmp_path, reference):
    out = tmp_path / "run"
    bptt.train({**RUN, "steps": 20, "out": str(out)})
    for path in Checkpoints(out / "checkpoints").paths():
        path.write_bytes(path.read_bytes()[:-100])
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=r"no intact checkpoint.*--restart"):
        bptt.resume(out, steps=40)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    refused = _cli("train", "--resume", str(out), "--steps", "40", "--no-progress")
    assert refused.returncode == 2
    assert "--restart" in _one_error_line(refused.stderr)
    restarted = _cli("train", "--resume", str(out), "--steps", "40", "--restart", "--no-progress")
    assert restarted.returncode == 0, restarted.stderr
    assert_same_run(out, reference)


def test_a_fallback_to_an_older_checkpoint_is_one_warning_line(tmp_path, reference):
    out = tmp_path / "run"
    bptt.train({**RUN, "steps": 20, "out": str(out)})
    newest = Checkpoints(out / "checkpoints").paths()[0]
    newest.write_bytes(b"not a checkpoint")
    newest.with_name(newest.name + ".sha256").write_text(
        __import__("hashlib").sha256(b"not a checkpoint").hexdigest()
    )  # the checksum matches: torch.load itself must refuse it
    done = _cli("train", "--resume", str(out), "--steps", "40", "--no-progress")
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(warned) == 1 and warned[0].startswith("warning:"), done.stderr
    assert "does not load: not a file of tensors" in warned[0]
    assert "using step-000000010.pt" in warned[0]
    assert "UserWarning" not in done.stderr and "PyTorch 2.6" not in done.stderr
    assert_same_run(out, reference)


def test_restart_without_resume_is_refused():
    refused = _cli("train", "--restart", "--steps", "1")
    assert refused.returncode == 2 and "--resume" in _one_error_line(refused.stderr)


def test_a_killed_run_without_checkpoints_keeps_its_record_until_restart_is_asked(tmp_path):
    out = tmp_path / "run"
    endless = ["--checkpoint-every", "0", "--checkpoint-every-s", "0", "--steps", "100000"]
    process = subprocess.Popen(
        [sys.executable, "-m", "bptt", "train", *FLAGS, *endless, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not (out / "metrics.csv").exists() or (out / "metrics.csv").stat().st_size < 200:
        assert process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    logged = (out / "metrics.csv").read_bytes()
    with pytest.raises(bptt.run.ConfigError, match=r"no checkpoint.*--restart"):
        bptt.resume(out, steps=10)
    refused = _cli("train", "--resume", str(out), "--steps", "10")
    assert refused.returncode == 2 and "--restart" in _one_error_line(refused.stderr)
    assert (out / "metrics.csv").read_bytes() == logged  # the record is kept
    bptt.resume(out, steps=10, restart=True)
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 10
