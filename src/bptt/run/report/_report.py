"""``report.html``: one self-contained page for a run or a bench.

A run's page shows its learning curve, gradient norm and clip threshold, the
gradient-by-distance heatmap over training, the final model's gradient by distance
and Jacobian norms, and the verdict with its numbers and remedies. A bench's page
shows the results matrix coloured by outcome (each cell a link to the run's page),
the leaderboard, and the figures that compare the runs of each group. Figures are
SVG (:mod:`bptt.run._figures`) inlined as data URIs: no script, no network, no file
beside the page but the runs' own pages.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bptt.run._figures as figures
from bptt.run.bench import aggregate, entry_texts, published_result, read_results, typed_row
from bptt.run.training import (
    RECORD_BYTES,
    ConfigError,
    RemedyCommand,
    RunSummary,
    atomic_write_text,
    read_bounded_text,
    read_summary,
)

__all__ = ["write_bench_report", "write_report", "write_run_report"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.solved { background: #c8ecc8; } .diverged { background: #f6c5c5; }
.unsolved { background: #fbe7b5; } .fitted { background: #d6e4f7; }
.verdict { font-size: 1.3em; font-weight: bold; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
code { background: #f5f5f5; padding: 1px 4px; }
p.note { color: #555; font-size: 0.9em; }
"""


def write_report(path: str | Path) -> Path:
    """Write ``report.html`` for a bench directory (it holds ``results.csv``) or a run
    directory (it holds ``summary.json``); return its path.

    Raises:
        ConfigError: path is neither.
    """
    where = Path(path)
    if (where / "results.csv").is_file():
        return write_bench_report(where)
    if (where / "summary.json").is_file():
        return write_run_report(where)
    raise ConfigError(
        "report", f"{where} is neither a run directory (summary.json) nor a bench (results.csv)"
    )


# --- a run ----------------------------------------------------------------------------------


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` from the run's files; return its path.

    Raises:
        ConfigError: the directory holds no readable ``summary.json``.
    """
    where = Path(run_dir)
    summary = read_summary(where)
    if summary is None:
        raise ConfigError("report", f"{where} holds no readable summary.json")
    target = where / "report.html"
    stamp = _inputs_stamp(where)
    if _stamp_of(target) == stamp:  # drawn from these very files by this code: keep it
        return target
    metrics = _read_metrics(where / "metrics.csv")
    diagnoses = _read_jsonl(where / "diagnostics.jsonl")
    title = _run_title(summary)
    parts = [f"<h1>{_e(title)}</h1>", _run_facts(summary), _verdict_section(summary)]
    parts += _training_figures(summary, metrics)
    dependency = _dependency(summary)
    parts += _heatmap(diagnoses, dependency)
    parts += _probe_figures(summary.probe or {}, dependency)
    if summary.nrmse is not None:
        parts.append(
            "<p class='note'>An echo state network: a fixed random reservoir and a "
            "ridge-regression readout; no gradient flows through time, so there is no "
            "training curve.</p>"
        )
        parts += _free_run_figure(where, {"seed": summary.seed})
    atomic_write_text(target, _page(title, parts, stamp=stamp))
    return target


def _training_figures(summary: RunSummary, metrics: list[dict[str, str]]) -> list[str]:
    """The learning curve and the gradient norm over the run's steps (none without
    logged steps)."""
    if not metrics:
        return []
    metric = summary.metric or "loss"
    return [
        _figure_html(
            figures.learning_curve(metrics, metric=metric, baseline=summary.baseline_loss),
            "Training loss of each logged batch and the test metric at "
            "each evaluation; the dashed line is the trivial predictor.",
        ),
        _figure_html(
            figures.gradient_norm_figure(metrics),
            "The norm of the whole gradient before clipping; the red line is the "
            "threshold a step's gradient was clipped to.",
        ),
    ]


def _heatmap(diagnoses: list[dict[str, Any]], dependency: int | None) -> list[str]:
    """The gradient by distance at each diagnosis during training, as a heatmap."""
    with_norms = [d for d in diagnoses if isinstance(d.get("norms"), list) and d["norms"]]
    if not with_norms:
        return []
    return [
        _figure_html(
            figures.distance_heatmap(with_norms, dependency),
            "How far back the loss's gradient reaches at each diagnosis during "
            "training: dark below the dependency length means it vanished there.",
        )
    ]


def _probe_figures(probe: dict[str, Any], dependency: int | None) -> list[str]:
    """The final model's gradient by distance (a curve per layer and direction where
    there are several) and its Jacobian norms along the probe's trajectory."""
    parts = []
    layers = probe.get("layers") if isinstance(probe.get("layers"), dict) else None
    if layers:  # a model of several layers or directions: a curve each
        curves = [(str(k), v) for k, v in layers.items() if isinstance(v, list) and v]
        parts.append(
            _figure_html(
                figures.distance_curves(curves, dependency=dependency),
                "The norm of dL/ds at each distance from the loss, over its value where "
                "it enters the layer, for each layer and direction of the final model "
                "(named as in the model: cells.0 the first layer, reverse_cells.0 its "
                "backward cell) on a probe batch of test sequences.",
            )
        )
    elif probe.get("norms"):
        parts.append(
            _figure_html(
                figures.distance_curves([("final model", probe["norms"])], dependency=dependency),
                "The norm of dL/ds at each distance from the loss, over its value at the "
                "loss, for the final model on a probe batch of test sequences.",
            )
        )
    if probe.get("jacobian"):
        parts.append(
            _figure_html(
                figures.jacobian_figure(probe["jacobian"]),
                "Above 1 the hidden-state gradient can grow from one step to the one "
                "before; below 1 it shrinks.",
            )
        )
    return parts


# A run's page is drawn again only when one of these files, or the code that draws it,
# has changed since (each figure costs about 2 s: a bench rerun would redraw them all).
_REPORT_INPUTS = ("summary.json", "metrics.csv", "diagnostics.jsonl", "config.toml")
_STAMP_PREFIX = "<meta name='bptt-inputs' content='"


def _inputs_stamp(where: Path) -> str:
    """A digest of the report code and the size and modification time of the run's files."""
    digest = hashlib.sha256()
    for module in (Path(__file__), Path(figures.__file__)):
        digest.update(module.read_bytes())
    for name in _REPORT_INPUTS:
        try:
            found = (where / name).stat()
            digest.update(f"{name}:{found.st_size}:{found.st_mtime_ns};".encode())
        except OSError:
            digest.update(f"{name}:-;".encode())
    return digest.hexdigest()[:32]


def _stamp_of(page: Path) -> str | None:
    """The inputs' stamp an existing page was drawn from (None: no page, or unstamped)."""
    if not page.is_file():  # a pipe would block the read
        return None
    try:
        with open(page, encoding="utf-8") as handle:
            head = handle.read(512)
    except (OSError, UnicodeDecodeError):
        return None
    start = head.find(_STAMP_PREFIX)
    if start < 0:
        return None
    start += len(_STAMP_PREFIX)
    end = head.find("'", start)
    return head[start:end] if end > start else None


def _run_title(summary: RunSummary) -> str:
    what = summary.method or summary.cell or "echo state network"
    length = summary.length
    return f"{summary.task}{'' if length is None else f' T={length}'}: {what}"


# the facts of a run's page: fields of RunSummary (a test holds them to its fields)
RUN_FACTS: tuple[str, ...] = (
    "task",
    "length",
    "method",
    "cell",
    "hidden",
    "optimizer",
    "lr",
    "clip",
    "clip_norm",
    "clip_step_norm",
    "seed",
    "steps",
    "steps_done",
    "metric",
    "final_loss",
    "baseline_loss",
    "accuracy",
    "solved",
    "solved_step",
    "nonfinite_steps",
    "clipped_steps",
    "spikes",
    "diverged",
    "wall_s",
    "units",
    "nrmse",
    "nrmse_84",
)


def _run_facts(summary: RunSummary) -> str:
    values = [(name, getattr(summary, name)) for name in RUN_FACTS]
    rows = [
        f"<tr><th>{_e(name)}</th><td>{_e(_text(value))}</td></tr>"
        for name, value in values
        if value is not None
    ]
    return "<table>" + "".join(rows) + "</table>"


def _verdict_section(summary: RunSummary) -> str:
    verdict, diagnosis = summary.verdict, summary.diagnosis
    if verdict is None:
        return ""
    parts = [f"<h2>Verdict</h2><p class='verdict'>{_e(verdict)}</p>"]
    if diagnosis is None:
        return "".join(parts)
    if diagnosis.reasons:
        parts.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in diagnosis.reasons) + "</ul>")
    if diagnosis.history:  # what a solved run came through: not a reason for its verdict
        items = "".join(f"<li>{_e(h)}</li>" for h in diagnosis.history)
        parts.append(f"<p>On the way:</p><ul>{items}</ul>")
    if diagnosis.remedies:
        parts.append("<h2>Remedies</h2><ul>")
        parts += [f"<li>{_remedy_html(remedy)}</li>" for remedy in diagnosis.remedies]
        parts.append("</ul>")
    evidence = diagnosis.evidence
    if evidence:
        rows = "".join(
            f"<tr><th>{_e(k)}</th><td class='num'>{_e(_text(v))}</td></tr>"
            for k, v in evidence.items()
        )
        parts.append(f"<details><summary>The numbers</summary><table>{rows}</table></details>")
    return "".join(parts)


def _remedy_html(remedy: RemedyCommand) -> str:
    why = remedy.why
    layer = (remedy.model_extra or {}).get("layer")  # as the library's, for one of several
    if layer:
        why = f"{layer}: {why}"
    return _e(why) + (f"<br><code>{_e(remedy.command)}</code>" if remedy.command else "")


def _dependency(summary: RunSummary | None) -> int | None:
    if summary is None or summary.diagnosis is None:
        return None
    value = summary.diagnosis.evidence.get("probe/dependency_length")
    return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# --- a bench --------------------------------------------------------------------------------


def write_bench_report(bench_dir: str | Path, *, wall_s: float | None = None) -> Path:
    """Write ``bench_dir/report.html`` (and each run's own page); return its path.

    The page is made from ``results.csv`` and the run directories alone, so ``bptt
    report`` gives the same page later.

    Args:
        bench_dir: the bench directory, with ``results.csv``.
        wall_s: the bench's wall time, shown when given.
    """
    where = Path(bench_dir)
    results = [typed_row(row) for row in read_results(where / "results.csv")]
    if not results:
        raise ConfigError("report", f"{where / 'results.csv'} lists no runs")
    summaries: dict[str, RunSummary] = {}
    for row in results:
        run_dir = where / row["run_dir"]
        summary = read_summary(run_dir)
        if summary is not None:
            summaries[row["run_dir"]] = summary
            write_run_report(run_dir)
    title = f"bptt bench: {where.name}"
    parts = [f"<h1>{_e(title)}</h1>"]
    seconds = sum(r["wall_seconds"] or 0 for r in results)
    line = f"{len(results)} runs; {seconds:,.0f} s of training in all"
    if wall_s is not None:
        line += f"; this bench call took {wall_s:,.0f} s"
    parts.append(f"<p>{_e(line)}. Each cell links to the run's own report.</p>")
    parts.append(_results_matrix(results))
    parts.append(_leaderboard_html(results))
    for group in dict.fromkeys(r["group"] for r in results):
        members = [r for r in results if r["group"] == group]
        parts.extend(_group_figures(where, group, members, summaries))
    target = where / "report.html"
    atomic_write_text(target, _page(title, parts))
    return target


def _outcome_class(row: dict[str, Any]) -> str:
    outcome = row["outcome"]
    if outcome == "fitted":
        return "fitted"
    if "diverged" in outcome:
        return "diverged"
    return "solved" if outcome == "solved" else "unsolved"


def _results_matrix(results: Sequence[dict[str, Any]]) -> str:
    seeds = sorted({r["seed"] for r in results})
    head = "".join(f"<th>seed {s}</th>" for s in seeds)
    lines = [
        "<h2>Results</h2><p class='note'>Green: solved; amber: not solved; red: diverged; "
        "blue: an echo state network's fit. Each cell: the outcome, the final test metric "
        "over the baseline, and the verdict.</p>",
        f"<table><tr><th>group</th><th>task</th><th>T</th><th>method</th>{head}</tr>",
    ]
    keys = dict.fromkeys((r["group"], r["task"], r["length"], r["method"]) for r in results)
    for key in keys:
        cells = []
        for seed in seeds:
            match = [
                r
                for r in results
                if (r["group"], r["task"], r["length"], r["method"]) == key and r["seed"] == seed
            ]
            if not match:
                cells.append("<td></td>")
                continue
            row = match[0]
            text = row["outcome"]
            if row["solved_at_step"]:
                text += f" (first solved at step {row['solved_at_step']})"
            ratio = _ratio(row)
            if ratio is not None:
                text += f"; {ratio:.3g} of baseline"
            elif row["final_metric"] is not None:
                text += f"; {row['metric']} {row['final_metric']:.3g}"
            if row["accuracy"] is not None:
                text += f"; accuracy {row['accuracy']:.1%}"
            if row["verdict"]:
                text += f"; {row['verdict']}"
            link = f"{row['run_dir']}/report.html"
            cells.append(
                f"<td class='{_outcome_class(row)}'><a href='{_e(link)}'>{_e(text)}</a></td>"
            )
        group, task, length, method = key
        length = "" if length is None else length  # a series (Mackey-Glass) has none
        lines.append(
            f"<tr><td>{_e(group)}</td><td>{_e(task)}</td><td class='num'>{_e(length)}</td>"
            f"<td>{_e(method)}</td>{''.join(cells)}</tr>"
        )
    lines.append("</table>")
    return "".join(lines)


def _ratio(row: dict[str, Any]) -> float | None:
    final, baseline = row["final_metric"], row["baseline"]
    if final is None or not baseline or row["outcome"] == "fitted":
        return None
    return final / baseline


def _leaderboard_html(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "<h2>Leaderboard</h2><table><tr><th>group</th><th>task</th><th>T</th><th>method</th>"
        "<th>seeds solved</th><th>median steps to solve</th><th>median s to solve</th>"
        "<th>median final metric / baseline</th><th>median accuracy</th><th>verdicts</th>"
        "<th>published</th></tr>"
    ]
    for entry in aggregate(results):
        published = entry["published"]
        if published is None and entry["group"] == "literature":
            published = published_result(entry["task"], entry["length"], entry["method"])
        solved = entry["solved"]
        if solved is None:
            css = "fitted"
        else:
            css = "solved" if solved == entry["runs"] else "unsolved"
        texts = entry_texts(entry)
        length = "" if entry["length"] is None else entry["length"]
        lines.append(
            f"<tr><td>{_e(entry['group'])}</td><td>{_e(entry['task'])}</td>"
            f"<td class='num'>{_e(length)}</td><td>{_e(entry['method'])}</td>"
            f"<td class='num {css}'>{_e(texts[0])}</td>"
            + "".join(f"<td class='num'>{_e(text)}</td>" for text in texts[1:])
            + f"<td>{_e(', '.join(entry['verdicts']))}</td><td>{_e(published or '')}</td></tr>"
        )
    lines.append("</table>")
    return "".join(lines)


_GROUP_TITLES = {
    "four-ways": "Four ways past vanishing gradients, on one task the plain RNN fails",
    "methods": "Which cells learn the dependency, and why",
    "clipping": "Clipping rescues a run that diverges",
    "truncation": "Truncation shorter than the dependency cannot learn it",
    "reservoir": "An echo state network",
    "literature": "The literature's long-range results",
    "matrix": "The matrix",
}


def _group_figures(
    where: Path, group: str, members: Sequence[dict[str, Any]], summaries: dict[str, RunSummary]
) -> list[str]:
    parts = [f"<h2>{_e(_GROUP_TITLES.get(group, group))}</h2>"]
    by_task: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for row in members:
        by_task.setdefault((row["task"], row["length"]), []).append(row)
    for (task, length), same in by_task.items():  # one figure of each kind per task
        parts += _test_metric_figure(where, f"{group}: {task} T={length}", same, summaries)
        if group in ("four-ways", "methods", "matrix", "literature"):
            parts += _distance_figure(f"{task} T={length}", same, summaries)
    if group == "reservoir":
        for row in members:
            parts.append(_reservoir_line(row, summaries.get(row["run_dir"])))
            parts += _free_run_figure(where / row["run_dir"], row)
    readouts = [  # an echo state network's, on a long-range task: a score, no curve
        row
        for row in members
        if _is_readout(summaries.get(row["run_dir"])) and row["task"] != "mackey-glass"
    ]
    parts += [_readout_line(row) for row in readouts if group != "reservoir"]
    return parts


def _test_metric_figure(
    where: Path, title: str, rows: Sequence[dict[str, Any]], summaries: dict[str, RunSummary]
) -> list[str]:
    """The test metric over the baseline of each trained run, a diverged run's marked."""
    curves, diverged = [], {}
    for row in rows:
        metrics = _read_metrics(where / row["run_dir"] / "metrics.csv")
        baseline = row["baseline"]
        steps, values = [], []
        for m in metrics:
            test = _float(m.get("test_loss"))
            if test is not None and baseline:
                steps.append(float(m["step"]))
                values.append(test / baseline)
        label = f"{row['method']} (seed {row['seed']})"
        summary = summaries.get(row["run_dir"])
        if summary is not None and summary.diverged:
            diverged[label] = _diverged_at(summary, metrics)
        if steps or label in diverged:
            curves.append((label, steps, values))
    if not curves:
        return []
    figure = figures.overlaid_test_curves(
        curves,
        title=f"Test metric during training: {title}",
        ylabel="test metric / baseline (log scale)",
        diverged=diverged,
    )
    caption = "Below 1 a run does better than the trivial predictor; an x marks a divergence."
    return [_figure_html(figure, caption)]


def _diverged_at(summary: RunSummary, metrics: Sequence[dict[str, str]]) -> int:
    """Where to mark a diverged run: its record's first non-finite step, else its first
    evaluation without a finite test metric, else (a loss that grew far above its start,
    every value finite) its last step."""
    first = (summary.run_record or {}).get("first_nonfinite")
    if isinstance(first, int):
        return first
    for m in metrics:
        if m.get("test_loss") and _float(m["test_loss"]) is None:
            return int(float(m["step"]))
    return int(summary.steps_done or 0)


def _distance_figure(
    title: str, rows: Sequence[dict[str, Any]], summaries: dict[str, RunSummary]
) -> list[str]:
    """The gradient by distance of each final model probed."""
    probes = []
    for row in rows:
        summary = summaries.get(row["run_dir"])
        probe = (None if summary is None else summary.probe) or {}
        if probe.get("norms"):
            label = f"{row['method']} (seed {row['seed']}): {row['verdict']}"
            probes.append((label, probe["norms"]))
    if not probes:
        return []
    dependency = _dependency(summaries.get(rows[0]["run_dir"]))
    figure = figures.distance_curves(
        probes, dependency=dependency, title=f"Gradient by distance: {title}"
    )
    caption = (
        "How much of the loss's gradient reaches each step back, for each final model: a "
        "curve that falls under 1e-3 before the dependency length cannot learn it."
    )
    return [_figure_html(figure, caption)]


def _free_run_figure(run_dir: Path, row: dict[str, Any]) -> list[str]:
    """An echo state network's free run against the series (``free_run.csv``), if any."""
    rows = _read_metrics(run_dir / "free_run.csv")
    if not rows:
        return []
    title = f"Mackey-Glass, seed {row['seed']}: running free"
    caption = (
        "After teacher forcing, the network's prediction is its next input: it follows the "
        "series for a while, then drifts from it."
    )
    return [_figure_html(figures.free_run_figure(rows, title), caption)]


def _is_readout(summary: RunSummary | None) -> bool:
    """Whether a run is an echo state network's (its summary names its units)."""
    return summary is not None and summary.units is not None


def _readout_line(row: dict[str, Any]) -> str:
    """An echo state network's test score on a long-range task (it trains no recurrence,
    so it has no curve and no gradient to show)."""
    if row["metric"] == "test_error_rate":
        score = f"test error rate {_text(_float(row['final_metric']))}"
    else:
        score = f"{_e(row['metric'])} {_text(_float(row['final_metric']))}"
    return (
        f"<p>{_e(row['method'])} on {_e(row['task'])} T={_e(row['length'])}, seed "
        f"{_e(row['seed'])}: {_e(score)} (baseline {_text(_float(row['baseline']))}), "
        f"{_e(row['outcome'])}, in {_e(row['wall_seconds'])} s: only its readout learns, "
        f"from the last state of a fixed reservoir.</p>"
    )


def _reservoir_line(row: dict[str, Any], summary: RunSummary | None) -> str:
    """An echo state network's scores on Mackey-Glass ("None" where it has none)."""
    nrmse, free_steps, nrmse_84 = (
        (None, None, None)
        if summary is None
        else (summary.nrmse, summary.free_steps, summary.nrmse_84)
    )
    return (
        f"<p>Mackey-Glass, seed {_e(row['seed'])}: one-step NRMSE "
        f"{_e(_text(nrmse))}, NRMSE after {_e(_text(free_steps))} free-running steps "
        f"{_e(_text(nrmse_84))}, in {_e(row['wall_seconds'])} s.</p>"
    )


# --- shared ---------------------------------------------------------------------------------


def _figure_html(figure: Any, caption: str) -> str:
    text = figures.svg(figure)
    data = base64.b64encode(text.encode()).decode()
    title = figure.axes[0].get_title() if figure.axes else ""
    return (
        f"<figure><img class='figure' alt='{_e(title)}' src='data:image/svg+xml;base64,{data}'>"
        f"<figcaption class='note'>{_e(caption)}</figcaption></figure>"
    )


def _page(title: str, parts: Sequence[str], stamp: str | None = None) -> str:
    meta = "" if stamp is None else f"{_STAMP_PREFIX}{stamp}'>"
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{meta}"
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )


def _read_record(path: Path) -> str:
    """A run's metrics.csv or diagnostics.jsonl ('' when missing; a warning, and '',
    when it is no regular file of bounded size or not text)."""
    try:
        return read_bounded_text(path, RECORD_BYTES)
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        warnings.warn(f"{path} is left out of the report: {reason}", stacklevel=3)
        return ""


def _read_metrics(path: Path) -> list[dict[str, str]]:
    try:
        return list(csv.DictReader(io.StringIO(_read_record(path), newline="")))
    except csv.Error as err:
        warnings.warn(f"{path} is left out of the report: {err}", stacklevel=2)
        return []


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    lines = _read_record(path).splitlines()
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def _float(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
