"""``benchmarks/gpu.py`` on the CPU at its smoke size: every cell and size is checked
against torch.nn and timed, the check catches a wrong weight, the deadline skips rows,
the FlashRNN row calls the peer by its documented shapes, and asking for CUDA where
there is none exits with status 2. (Its timings on a GPU are measured only on a lent
machine.)"""

import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from helpers import load_benchmark

CELLS = ("rnn", "lstm", "gru")
SMOKE_HIDDEN = (8, 16)


@pytest.fixture
def gpu():
    """The benchmark's module; the TF32 flags it turns off are put back afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield load_benchmark("gpu")
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_the_smoke_run_checks_and_times_every_cell_and_size(gpu, tmp_path, capsys):
    path = tmp_path / "gpu.json"
    results = gpu.main(["--device", "cpu", "--smoke", "--json", str(path)])
    assert json.loads(path.read_text()) == json.loads(json.dumps(results))
    asked = {(cell, hidden) for cell in CELLS for hidden in SMOKE_HIDDEN}
    rows = results["rows"]
    assert len(rows) == len(asked) and {(r["cell"], r["hidden"]) for r in rows} == asked
    for row in rows:
        assert row["repeats"] == 2 and len(row["ours_times"]) == len(row["theirs_times"]) == 2
        assert row["ours_s"] == statistics.median(row["ours_times"])
        assert row["theirs_s"] == statistics.median(row["theirs_times"])
        for seconds in (row["ours_s"], row["theirs_s"]):
            assert math.isfinite(seconds) and seconds > 0
        assert row["ratio"] == pytest.approx(row["ours_s"] / row["theirs_s"], rel=1e-12)
        check = row["check"]
        assert set(check["max_rel_diff"]) == {"output", "input_grad", "weight_hh_grad"}
        assert check["worst"] == max(check["max_rel_diff"].values())
        assert check["tol"] == gpu.tolerance(20, row["hidden"], 1)
        assert check["agree"] and check["norms_finite"] and check["worst"] <= check["tol"]
    generic = results["generic"]
    assert {(r["cell"], r["hidden"]) for r in generic} == asked
    for row in generic:
        assert row["check"]["agree"] and row["repeats"] == 2
        assert row["generic_s"] > 0 and row["fast_s"] > 0
        assert row["ratio"] == pytest.approx(row["generic_s"] / row["fast_s"], rel=1e-12)
    stacked = results["stacked"]
    assert {(r["cell"], r["hidden"], r["k"]) for r in stacked} == {(c, 8, 3) for c in CELLS}
    for row in stacked:
        assert row["check"]["agree"] and row["repeats"] == 2
        assert row["speedup"] == pytest.approx(row["separate_s"] / row["stacked_s"], rel=1e-12)
    # the graphs' rows: on the CPU both sides are the uncaptured loop (the toggle works)
    graphs = results["graphs"]
    assert {(r["cell"], r["hidden"]) for r in graphs} == asked
    assert all(r["check"]["agree"] and r["check"]["worst"] == 0 for r in graphs)
    # on the CPU outside Triton's interpreter bptt refuses the Triton engine: said, not run
    triton = results["triton"]
    assert triton["rows"] == [] and {(r["cell"], r["hidden"]) for r in triton["refused"]} == {
        (c, 8) for c in CELLS
    }
    assert all("CUDA" in r["reason"] for r in triton["refused"])
    assert results["all_agree"] and results["errors"] == 0 and not results["skipped"]
    assert results["tf32"]["cuda.matmul.allow_tf32"] is False
    assert results["tf32"]["cudnn.allow_tf32"] is False
    flash = results["flashrnn"]
    assert not flash["available"] and flash["reason"] and not flash["rows"]
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "TF32 off" in out
    assert out.count(": agree (max rel diff") == 2 * len(asked)  # torch.nn's and the graphs'
    assert out.count("\ngraphs ") == len(asked)
    assert f"FlashRNN skipped: {flash['reason']}" in out


def test_the_check_catches_weights_that_differ(gpu, monkeypatch):
    make_pair = gpu.make_pair

    def off_by_a_little(*args):
        ours, theirs = make_pair(*args)
        with torch.no_grad():
            theirs.weight_hh_l0.mul_(1 + 1e-3)  # 40x the smoke size's tolerance
        return ours, theirs

    monkeypatch.setattr(gpu, "make_pair", off_by_a_little)
    argv = ["--device", "cpu", "--smoke", "--cells", "gru", "--hidden", "8", "--no-generic"]
    results = gpu.main(argv)
    (row,) = results["rows"]
    assert not row["check"]["agree"] and row["check"]["worst"] > row["check"]["tol"]
    assert not results["all_agree"]


def test_the_deadline_skips_rows_with_a_note(gpu, tmp_path, capsys):
    path = tmp_path / "gpu.json"
    results = gpu.main(["--device", "cpu", "--smoke", "--budget-s", "0", "--json", str(path)])
    assert results["rows"] == [] and results["generic"] == [] and not results["all_agree"]
    # the torch.nn rows, the generic ones, the graphs' (at both H) and the stacked ones
    assert len(results["skipped"]) == 3 * len(CELLS) * len(SMOKE_HIDDEN) + len(CELLS)
    assert json.loads(path.read_text())["skipped"] == results["skipped"]
    out = capsys.readouterr().out
    assert "skipped lstm H=16: 0 s of the budget left" in out and "checks: none ran" in out


@pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="Triton is not installed (the gpu extra)"
)
def test_the_triton_rows_check_and_time_in_the_interpreter(tmp_path):
    """The Triton section as a GPU would run it, in Triton's interpreter on the CPU (a
    child process: the interpreter is a setting of the whole process): checked against
    float64 with clipping active, then timed beside the fast loop and torch.nn."""
    path = tmp_path / "gpu.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
    argv = ["--device", "cpu", "--smoke", "--cells", "rnn", "--hidden", "8", "--no-generic"]
    argv += ["--no-stack", "--no-flashrnn", "--json", str(path)]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, str(script), *argv], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (row,) = json.loads(path.read_text())["triton"]["rows"]
    check = row["check"]
    assert check["agree"] and check["triton"]["worst"] <= check["tol"]
    assert set(check["triton"]["max_rel_diff"]) == {
        "output",
        "input_grad",
        "norms",
        "weight_ih_grad",
        "weight_hh_grad",
        "bias_ih_grad",
        "bias_hh_grad",
    }
    assert row["repeats"] == 2 and row["triton_s"] > 0 and row["theirs_s"] > 0
    assert "triton rnn H=8: agree with float64" in done.stdout


def test_the_flashrnn_row_calls_it_by_its_documented_shapes(gpu, monkeypatch):
    """A stand-in with FlashRNN 1.0's signature and layouts (Wx: B T G NH D, R: G NH D P,
    b: G NH D, states out: S B T NH D) as an Elman RNN; its fused backend fails, as a
    float32 build may, and the row falls back to the next one."""
    calls = []

    def flashrnn(Wx, R, b, states=None, function="lstm", backend="cuda_fused", dtype="bfloat16"):
        calls.append((backend, function, dtype, Wx.shape, R.shape, b.shape))
        if backend == "cuda_fused":
            raise RuntimeError("no fused kernel for this size")
        h, outs = torch.zeros(Wx.shape[0], Wx.shape[3], Wx.shape[4]), []
        for t in range(Wx.shape[1]):
            h = torch.tanh(Wx[:, t, 0] + torch.einsum("hdp,bhp->bhd", R[0], h) + b[0])
            outs.append(h)
        states = torch.stack(outs, 1)[None]
        return states, states[:, :, -1:]

    module = types.ModuleType("flashrnn.flashrnn")
    module.flashrnn = flashrnn
    monkeypatch.setitem(sys.modules, "flashrnn", types.ModuleType("flashrnn"))
    monkeypatch.setitem(sys.modules, "flashrnn.flashrnn", module)
    fn, gates, reason = gpu.load_flashrnn()
    assert fn is flashrnn and reason == "" and gates["elman"] == (1, 1, 1, 1, 1)
    args = gpu.parse(["--device", "cpu", "--smoke"])
    row = gpu.flashrnn_row(fn, gates, "rnn", args, 8, torch.device("cpu"), gpu.Budget(60))
    assert row["backend"] == "cuda" and row["repeats"] == 2 and row["flashrnn_s"] > 0
    assert calls[0][:3] == ("cuda_fused", "elman", "float32")
    expected = ((4, 20, 1, 1, 8), (1, 1, 8, 8), (1, 1, 8))
    assert all((c[3], c[4], c[5]) == expected for c in calls)
    assert [c[0] for c in calls] == ["cuda_fused", "cuda", "cuda", "cuda"]  # warm-up, 2 timed


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")
def test_asking_for_cuda_without_it_exits_with_status_2(gpu, capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu.main(["--device", "cuda"])
    assert exit_.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().out


def test_a_failing_row_is_recorded_and_the_others_run(gpu, monkeypatch, capsys):
    compare_row = gpu.compare_row

    def out_of_memory_for_lstm(kind, *args):
        if kind == "lstm":
            raise RuntimeError("CUDA out of memory")
        return compare_row(kind, *args)

    monkeypatch.setattr(gpu, "compare_row", out_of_memory_for_lstm)
    argv = ["--device", "cpu", "--smoke", "--hidden", "8", "--no-generic", "--no-flashrnn"]
    results = gpu.main(argv)
    failed = {"cell": "lstm", "hidden": 8, "error": "RuntimeError: CUDA out of memory"}
    assert failed in results["rows"] and results["errors"] == 1
    assert {r["cell"] for r in results["rows"] if "error" not in r} == {"rnn", "gru"}
    assert results["all_agree"]  # of the rows that ran
    out = capsys.readouterr().out
    assert "lstm H=8: FAILED RuntimeError: CUDA out of memory" in out
    assert "FlashRNN skipped: --no-flashrnn" in out


def test_tables_print_without_rich(gpu, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "rich.console", None)  # its import now fails
    gpu.print_table("title", ["cell", "ms"], [["lstm", "12.5"], ["gru", "3"]])
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["title", "cell    ms", "lstm  12.5", " gru     3"]


def test_the_graphs_row_holds_the_captured_loop_to_the_uncaptured_one(gpu):
    """With the graphs replaced by direct execution (the CPU stand-in), the row's
    captured side really takes the graph path (a capture is made) and agrees exactly."""
    from bptt._kernels import _graphs

    args = gpu.parse(["--device", "cpu", "--smoke"])
    with _graphs.direct_execution():
        made = _graphs.CAPTURES.made
        row = gpu.graphs_row("lstm", args, 8, torch.device("cpu"), gpu.Budget(60))
        assert _graphs.CAPTURES.made > made
    assert row["check"]["agree"] and row["check"]["worst"] == 0
    assert row["check"]["captures"]["made"] > 0 and row["check"]["captures"]["failed"] == 0
    assert row["captured_s"] > 0 and row["uncaptured_s"] > 0 and row["repeats"] == 2
