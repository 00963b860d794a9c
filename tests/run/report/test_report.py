"""``report.html`` for a run and a bench, read as a file and as a person sees it in a
headless browser."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import bptt
from bptt.cli import app
from bptt.run import CLIP_DEMO, ConfigError, plan_bench, run_bench, run_esn
from bptt.run.report._report import write_report, write_run_report

runner = CliRunner()


def _figures(page: str) -> list[str]:
    """The SVG text of every figure inlined in a page."""
    found = re.findall(r"src='data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)'", page)
    return [base64.b64decode(data).decode() for data in found]


@pytest.fixture(scope="module")
def exploding_run(tmp_path_factory) -> Path:
    """A real run that explodes: the clipping demonstration without clipping."""
    out = tmp_path_factory.mktemp("exploding") / "run"
    config = {**CLIP_DEMO, "clip": "none", "steps": 60, "threads": 1, "out": str(out)}
    bptt.train({**config, "diagnose_every": 20, "log_every": 1, "eval_every": 20})
    return out


def test_the_page_of_an_exploding_run_shows_its_story(exploding_run):
    page = write_run_report(exploding_run).read_text()
    assert "exploding" in page and "Remedies" in page
    svgs = _figures(page)
    assert len(svgs) >= 4  # loss, gradient norm, heatmap, final gradient by distance
    learning = svgs[0]
    assert "Learning curve" in learning and "non-finite step" in learning
    assert "optimizer step" in learning and "log scale" in learning
    assert "clip threshold" not in svgs[1] or "Gradient norm" in svgs[1]
    assert "Gradient by distance during training" in "".join(svgs)
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")


def test_a_learned_run_draws_its_threshold_and_jacobian(tmp_path):
    out = tmp_path / "run"
    bptt.train(
        {
            "task": "adding",
            "length": 6,
            "cell": "rnn",
            "hidden": 8,
            "steps": 30,
            "threads": 1,
            "clip": "norm",
            "clip_norm": 0.05,
            "out": str(out),
            "eval_every": 10,
        }
    )
    svgs = _figures(write_run_report(out).read_text())
    titles = "".join(svgs)
    assert "clip threshold" in titles and "Recurrent Jacobian spectral norm" in titles


def test_a_page_is_drawn_again_only_when_its_runs_files_changed(tmp_path):
    out = tmp_path / "run"
    config = {"task": "adding", "length": 6, "cell": "gru", "hidden": 4, "steps": 5}
    bptt.train({**config, "test_size": 16, "threads": 1, "out": str(out)})
    page = write_run_report(out)
    drawn = page.stat().st_mtime_ns
    assert write_run_report(out).stat().st_mtime_ns == drawn  # nothing changed: kept
    summary = out / "summary.json"
    text = summary.read_text()
    summary.write_text(text.replace('"task": "adding"', '"task": "adding" '))  # one byte more
    assert write_run_report(out).stat().st_mtime_ns != drawn
    redrawn = page.read_text()
    page.write_text(redrawn.replace("bptt-inputs", "other-inputs"))  # a page of unknown inputs
    write_run_report(out)
    assert page.read_text() == redrawn  # drawn again, the same (no date in the figures)


def test_an_echo_state_network_has_a_page(tmp_path):
    out = tmp_path / "esn"
    run_esn({"task": "mackey-glass", "units": 50, "free_steps": 30, "out": str(out)})
    page = write_report(out).read_text()
    assert "nrmse" in page and "echo state network" in page
    (free,) = [svg for svg in _figures(page) if "running free" in svg]  # against the series
    assert "the series" in free and "steps after teacher forcing ended" in free
    rows = (out / "free_run.csv").read_text().splitlines()
    assert rows[0] == "step,truth,predicted" and len(rows) == 31


def test_the_bench_page_draws_a_diverged_run_and_one_figure_per_task(tmp_path):
    """A run that diverges before its first evaluation has no finite test metric: its
    divergence is an x in the legend at the step it went non-finite; a clipped run beside
    it is a curve; runs of two tasks in one group get a figure each; a long-range ESN
    row is a line of its test score."""
    from bptt.run.bench import PlannedRun

    fields = {**CLIP_DEMO, "steps": 40, "eval_every": 20, "threads": 1, "test_size": 64}
    fields.pop("lstm_init")  # the LSTM's alone
    runs = [
        PlannedRun("clipping", "none", "train", {**fields, "clip": "none", "lstm_init": "torch"}),
        PlannedRun(
            "clipping",
            "norm",
            "train",
            {**fields, "clip": "norm", "clip_norm": 1.0, "lstm_init": "torch"},
        ),
        PlannedRun("clipping", "rnn", "train", {**fields, "task": "order", "cell": "rnn"}),
        PlannedRun("clipping", "esn", "esn", {"task": "order", "length": 20, "units": 40}),
    ]
    run_bench(runs, tmp_path, progress=False)
    page = (tmp_path / "report.html").read_text()
    svgs = [svg for svg in _figures(page) if "Test metric during training" in svg]
    assert len(svgs) == 2  # adding T=10 and order T=10
    (adding,) = [svg for svg in svgs if "adding T=10" in svg]
    first = json.loads((tmp_path / runs[0].name / "summary.json").read_text())
    step = first["run_record"]["first_nonfinite"]
    assert first["diverged"] and f"none (seed 0): diverged at step {step}" in adding
    assert "norm (seed 0)" in adding and "diverged" not in adding.replace(
        f"none (seed 0): diverged at step {step}", ""
    )
    assert "esn on order T=20, seed 0: test error rate" in page


def test_the_facts_of_a_run_page_are_fields_of_its_summary(tmp_path):
    from bptt.run import RunSummary
    from bptt.run.report._report import RUN_FACTS

    assert set(RUN_FACTS) <= set(RunSummary.model_fields)  # read by name: held to the model
    # a summary of an older version (only some keys) and one with a later version's
    # keys and verdict both make a page; what the page shows is what the file holds
    out = tmp_path / "older"
    out.mkdir()
    summary = {"task": "adding", "length": 5, "cell": "lstm", "final_loss": 0.25, "new": [1]}
    (out / "summary.json").write_text(json.dumps({**summary, "verdict": "unheard of"}))
    page = write_report(out).read_text()
    assert "<title>adding T=5: lstm</title>" in page and "unheard of" in page
    assert "<th>final_loss</th><td>0.25</td>" in page and "<th>new</th>" not in page


def test_report_refuses_what_is_not_a_run_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="neither a run directory"):
        write_report(tmp_path)
    result = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "neither" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "summary.json").write_text("{not json")
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "summary.json" in result.output


def test_report_command_writes_the_page(exploding_run):
    result = runner.invoke(app, ["report", str(exploding_run)])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output and (exploding_run / "report.html").is_file()


# --- in a browser ---------------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-background-networking",  # this machine's network is closed
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def _chromium() -> str:
    for name in (os.environ.get("BPTT_CHROMIUM", ""), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    pytest.skip(
        "no Chromium found (the Makefile installs Debian's chromium; set BPTT_CHROMIUM "
        "to another binary): the browser test did not run"
    )


def _collect_errors(errors: list[str]):
    def collect(message) -> None:
        if message.type == "error":
            errors.append(message.text)

    return collect


def test_the_bench_report_renders_in_a_browser(tmp_path):
    """Opens a bench's page and a run's page in headless Chromium: no console error,
    every figure loaded with a non-zero size; screenshots in the test's folder."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed: the browser test did not run"
    )
    executable = _chromium()
    runs = plan_bench(
        "matrix", tasks=["adding"], lengths=[6], methods=["rnn", "lstm"], steps=40, hidden=8
    )
    run_bench(runs, tmp_path / "bench", progress=False)
    pages = [tmp_path / "bench" / "report.html", tmp_path / "bench" / runs[0].name / "report.html"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            for index, path in enumerate(pages):
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                errors: list[str] = []
                page.on("console", _collect_errors(errors))
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.goto(path.resolve().as_uri())
                page.wait_for_load_state("load")
                images = page.query_selector_all("img.figure")
                assert len(images) >= 2
                for image in images:
                    box = image.bounding_box()
                    assert box is not None and box["width"] > 100 and box["height"] > 50
                    assert image.evaluate("i => i.complete && i.naturalWidth > 0")
                assert errors == []
                shot = tmp_path / f"screenshot-{index}.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                print(f"screenshot: {shot}")
                if index == 0:  # the matrix links to each run's page
                    links = page.eval_on_selector_all("td a", "as => as.map(a => a.href)")
                    assert any(runs[0].name in link for link in links)
        finally:
            browser.close()


def test_the_literature_rows_carry_their_published_result(tmp_path):
    runs = plan_bench(
        "full",
        tasks=["adding"],
        lengths=[200],
        methods=["lstm-chrono-adam"],
        seeds=[0],
        steps=2,
        hidden=4,
    )
    rows = run_bench(runs, tmp_path, progress=False)
    anchor = rows[0]["published"]
    assert anchor and "Arjovsky" in anchor
    assert anchor in (tmp_path / "report.html").read_text()
    board = bptt.run.leaderboard(rows)
    assert [column.header for column in board.columns][-1] == "published"


def test_what_a_solved_run_came_through_is_shown_apart_from_its_verdict(tmp_path):
    out = tmp_path / "run"
    config = {"task": "adding", "length": 6, "cell": "gru", "hidden": 4, "steps": 5}
    bptt.train({**config, "test_size": 16, "threads": 1, "out": str(out)})
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diagnosis"]["history"] == []  # 5 calm steps: nothing to tell
    page = write_run_report(out).read_text()
    assert "On the way" not in page
    event = "the gradient norm rose from 0.1 to 773 (step 237)"
    summary["diagnosis"]["history"] = [event]
    (out / "summary.json").write_text(json.dumps(summary))
    page = write_run_report(out).read_text()
    assert re.search(r"On the way:</p><ul><li>" + re.escape(event), page)
