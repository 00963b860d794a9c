"""A machine that is not idle: a run's threads follow the cores other processes leave
free, one thread runs the reservoir's serial loop, and a resumed run computes with the
thread count it began with."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import bptt
from bptt.reservoir import _kernels
from bptt.run.training import _cores
from run_files import assert_same_run


def _fake_times(busy_share: dict[int, float]):
    """/proc/stat samples in which each core was busy the given share of 100 jiffies."""
    samples = iter(
        [
            {core: (0, 0) for core in busy_share},
            {core: (int(100 * share), 100) for core, share in busy_share.items()},
        ]
    )
    return lambda: next(samples)


@pytest.mark.parametrize(
    ("shares", "free"),
    [({0: 0.0, 1: 0.0}, 2), ({0: 0.02, 1: 0.97}, 1), ({0: 1.0, 1: 1.0}, 1), ({0: 0.4}, 1)],
)
def test_free_cores_leaves_out_the_cores_others_keep_busy(monkeypatch, shares, free):
    monkeypatch.setattr(_cores, "allowed_cores", lambda: sorted(shares))
    monkeypatch.setattr(_cores, "_cpu_times", _fake_times(shares))
    assert _cores.free_cores(sample_s=0.0) == free


def test_free_cores_counts_every_allowed_core_where_the_load_is_unknown(monkeypatch):
    def unreadable():
        raise OSError("no /proc/stat here")

    monkeypatch.setattr(_cores, "allowed_cores", lambda: [0, 1, 2])
    monkeypatch.setattr(_cores, "_cpu_times", unreadable)
    assert _cores.free_cores(sample_s=0.0) == 3


def test_a_real_busy_loop_takes_its_core_out_of_the_count():
    allowed = _cores.allowed_cores()
    if len(allowed) < 2:
        pytest.skip("needs two cores: one to keep busy, one to count")
    loop = subprocess.Popen(
        ["taskset", "-c", str(allowed[-1]), sys.executable, "-c", "while True: pass"]
    )
    try:
        time.sleep(0.3)  # on its core
        counts = [_cores.free_cores(sample_s=0.3) for _ in range(3)]
    finally:
        loop.kill()
        loop.wait()
    # the other cores may be busy too (this machine is shared); the looped one never free
    assert max(counts) <= len(allowed) - 1


def test_thread_count_is_what_was_asked_or_torchs_setting_lowered_to_the_free_cores(
    monkeypatch,
):
    monkeypatch.setattr(_cores, "_last", None)
    monkeypatch.setattr(_cores, "free_cores", lambda sample_s=0.1: 1)
    assert _cores.thread_count(3) == 3
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert _cores.thread_count(0) == 1
        with _cores.run_threads(0) as count:
            assert count == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)


def test_one_thread_runs_the_serial_reservoir_loop_with_the_parallel_ones_states(monkeypatch):
    reservoir = bptt.reservoir.Reservoir(200, seed=0)
    x = torch.randn(1, 300, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        parallel = reservoir.run(x, reset=True)
        torch.set_num_threads(1)
        calls = []
        serial_build = _kernels.drive_one_serial
        monkeypatch.setattr(_kernels, "drive_one_serial", lambda *a: calls.append(serial_build(*a)))
        monkeypatch.setattr(_kernels, "drive_one", lambda *a: pytest.fail("the pool was used"))
        serial = reservoir.run(x, reset=True)
    finally:
        torch.set_num_threads(before)
    assert calls  # the serial build ran
    # each row's sum runs in one fixed order in both builds: the same states
    np.testing.assert_array_equal(serial.numpy(), parallel.numpy())


def test_a_run_resumed_on_another_thread_count_computes_with_the_one_it_began_with(
    tmp_path, monkeypatch
):
    config = {"task": "adding", "length": 12, "cell": "lstm", "hidden": 16, "steps": 30}
    config.update({"checkpoint_every": 10, "test_size": 50, "eval_every": 10, "threads": 0})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(_cores, "_last", None)
        monkeypatch.setattr(_cores, "free_cores", lambda sample_s=0.1: 2)
        reference = tmp_path / "reference"
        bptt.train({**config, "out": str(reference)})
        out = tmp_path / "run"
        bptt.train({**config, "steps": 20, "out": str(out)})
        state = torch.load(sorted((out / "checkpoints").glob("*.pt"))[-1], weights_only=True)
        assert state["threads"] == 2
        monkeypatch.setattr(_cores, "_last", None)
        monkeypatch.setattr(_cores, "free_cores", lambda sample_s=0.1: 1)  # the machine got busy
        seen = []
        bptt.resume(
            out, steps=30, on_gradients=lambda step, model: seen.append(torch.get_num_threads())
        )
    finally:
        torch.set_num_threads(before)
    assert set(seen) == {2}
    assert_same_run(out, reference)
