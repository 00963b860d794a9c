"""The report's figures, drawn with matplotlib (no pyplot: no global state, no GUI
backend) and returned as SVG text.

SVG keeps lines sharp at any zoom and needs nothing but the browser; each figure is
inlined in the page as a data URI, so a report is one file that opens with no
network. Every figure has a title, axis labels with units, and a log scale where the
quantity spans decades.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # matplotlib loads when a figure is drawn (0.5 s every command paid)
    from matplotlib.figure import Figure

__all__ = [
    "distance_curves",
    "distance_heatmap",
    "gradient_norm_figure",
    "jacobian_figure",
    "learning_curve",
    "overlaid_test_curves",
    "svg",
]

WIDTH, HEIGHT = 7.0, 3.6  # inches


def svg(figure: Figure) -> str:
    """The figure as SVG text."""
    import matplotlib

    buffer = io.StringIO()
    # no date in the metadata, element ids from a fixed salt: the same run draws the
    # same page, byte for byte
    with matplotlib.rc_context({"svg.hashsalt": "bptt"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    return buffer.getvalue()


def _figure(title: str) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH, HEIGHT), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=11)
    axes.grid(True, which="major", alpha=0.3)
    return figure, axes


def _column(rows: Sequence[dict[str, str]], name: str) -> np.ndarray:
    """A metrics.csv column as floats (NaN where blank or absent)."""
    values = []
    for row in rows:
        text = row.get(name) or ""
        try:
            values.append(float(text))
        except ValueError:
            values.append(math.nan)
    return np.asarray(values, dtype=float)


def _positive(values: np.ndarray) -> np.ndarray:
    return np.isfinite(values) & (values > 0)


def learning_curve(
    metrics: Sequence[dict[str, str]], *, metric: str, baseline: float | None
) -> Figure:
    """Training loss at each logged step and the test metric at each evaluation (log
    scale), the baseline, loss spikes and non-finite steps marked."""
    figure, axes = _figure("Learning curve")
    steps = _column(metrics, "step")
    loss = _column(metrics, "loss")
    ok = _positive(loss)
    axes.plot(steps[ok], loss[ok], lw=0.8, color="tab:blue", label="training loss (batch)")
    test = _column(metrics, "test_loss")
    tested = _positive(test)
    if tested.any():
        axes.plot(
            steps[tested],
            test[tested],
            "o-",
            ms=3,
            lw=1.2,
            color="tab:green",
            label=f"test {metric}",
        )
    if baseline is not None and baseline > 0:
        axes.axhline(baseline, ls="--", color="grey", lw=1, label="baseline (trivial predictor)")
    _mark_spikes(axes, steps, loss, _column(metrics, "loss_spike") == 1, "loss spike")
    _mark_nonfinite(axes, steps, _column(metrics, "nonfinite"))
    axes.set_yscale("log")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(f"{metric} (log scale)")
    axes.legend(fontsize=8, loc="best")
    return figure


def _mark_spikes(
    axes: Any, steps: np.ndarray, values: np.ndarray, flags: np.ndarray, label: str
) -> None:
    """A triangle on every flagged step whose value can be drawn on a log scale."""
    spikes = flags & _positive(values)
    if spikes.any():
        axes.plot(steps[spikes], values[spikes], "^", ms=5, color="tab:orange", label=label)


def _mark_nonfinite(axes: Any, steps: np.ndarray, nonfinite: np.ndarray) -> None:
    bad = steps[nonfinite >= 1]
    if bad.size:
        for step in bad[:200]:  # a rug: one thin line per logged non-finite step
            axes.axvline(step, color="red", alpha=0.25, lw=0.6)
        axes.plot([], [], color="red", alpha=0.5, label=f"non-finite step ({bad.size} logged)")


def gradient_norm_figure(metrics: Sequence[dict[str, str]]) -> Figure:
    """The global gradient norm before clipping (log scale) and the clip threshold in
    force at each logged step."""
    figure, axes = _figure("Gradient norm and clip threshold")
    steps = _column(metrics, "step")
    norm = _column(metrics, "grad_norm")
    ok = _positive(norm)
    axes.plot(steps[ok], norm[ok], lw=0.8, color="tab:blue", label="||grad|| before clipping")
    threshold = _column(metrics, "clip_threshold")
    clipping = _positive(threshold)
    if clipping.any():
        axes.step(
            steps[clipping],
            threshold[clipping],
            where="post",
            color="tab:red",
            lw=1.2,
            label="clip threshold",
        )
    clipped = (_column(metrics, "clipped") >= 1) & ok
    if clipped.any():
        axes.plot(
            steps[clipped],
            norm[clipped],
            ".",
            ms=2,
            color="tab:red",
            alpha=0.5,
            label=f"clipped ({int(clipped.sum())} logged steps)",
        )
    _mark_spikes(axes, steps, norm, _column(metrics, "grad_spike") == 1, "gradient-norm spike")
    _mark_nonfinite(axes, steps, _column(metrics, "nonfinite"))
    axes.set_yscale("log")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("global L2 norm (log scale)")
    axes.legend(fontsize=8, loc="best")
    return figure


def _ratios(norms: Sequence[float | None]) -> np.ndarray:
    """Norms by distance over the norm at the loss (NaN where none)."""
    values = np.asarray([math.nan if v is None else v for v in norms], dtype=float)
    first = values[0] if values.size and values[0] and np.isfinite(values[0]) else math.nan
    return values / first


def distance_heatmap(records: Sequence[dict[str, Any]], dependency: int | None) -> Figure:
    """log10 of ||dL/ds_{T-1-d}|| / ||dL/ds_{T-1}|| at each distance d (vertical) for
    each diagnosis during training (horizontal)."""
    figure, axes = _figure("Gradient by distance during training")
    steps = [int(r["step"]) for r in records]
    length = max(len(r["norms"]) for r in records)
    grid = np.full((length, len(records)), np.nan)
    for column, record in enumerate(records):
        ratios = _ratios(record["norms"])
        with np.errstate(divide="ignore", invalid="ignore"):
            grid[: ratios.size, column] = np.log10(ratios)
    grid = np.clip(grid, -12, 6)
    edges = np.asarray(steps, dtype=float)
    if len(edges) > 1:
        half = np.diff(edges) / 2
        edges = np.concatenate([[edges[0] - half[0]], edges[:-1] + half, [edges[-1] + half[-1]]])
    else:
        edges = np.asarray([edges[0] - 0.5, edges[0] + 0.5])
    mesh = axes.pcolormesh(
        edges,
        np.arange(length + 1) - 0.5,
        np.ma.masked_invalid(grid),
        cmap="viridis",
        vmin=-12,
        vmax=max(1.0, float(np.nanmax(grid))),
    )
    if dependency is not None and dependency < length:
        axes.axhline(dependency, color="white", ls="--", lw=1, label="dependency length")
        axes.legend(fontsize=8, loc="upper right")
    bar = figure.colorbar(mesh, ax=axes)
    bar.set_label("log10 gradient ratio to distance 0")
    axes.set_xlabel("optimizer step of the diagnosis")
    axes.set_ylabel("distance d from the loss (time steps)")
    return figure


def distance_curves(
    curves: Sequence[tuple[str, Sequence[float | None]]],
    *,
    dependency: int | None,
    title: str = "Gradient by distance (final model)",
) -> Figure:
    """||dL/ds_{T-1-d}|| / ||dL/ds_{T-1}|| against the distance d, one line per
    labelled curve (log scale)."""
    figure, axes = _figure(title)
    drawn = 0
    for label, norms in curves:
        ratios = _ratios(norms)
        ok = _positive(ratios)
        if ok.any():
            axes.plot(np.flatnonzero(ok), ratios[ok], lw=1.4, label=label)
            drawn += 1
    if dependency is not None:
        axes.axvline(dependency, color="grey", ls="--", lw=1, label="dependency length")
    axes.axhline(1e-3, color="tab:red", ls=":", lw=1, label="horizon threshold 1e-3")
    if drawn:
        axes.set_yscale("log")
    axes.set_xlabel("distance d from the loss (time steps)")
    axes.set_ylabel("gradient ratio to d = 0 (log scale)")
    axes.legend(fontsize=8, loc="best")
    return figure


def jacobian_figure(jacobian: Sequence[float | None]) -> Figure:
    """The spectral norm of ds_t/ds_{t-1} along the probe's trajectory."""
    figure, axes = _figure("Recurrent Jacobian spectral norm along the sequence")
    values = np.asarray([math.nan if v is None else v for v in jacobian], dtype=float)
    ok = _positive(values)
    axes.plot(
        np.flatnonzero(ok),
        values[ok],
        lw=1.2,
        color="tab:purple",
        label="||ds_t / ds_(t-1)||_2 (mean over the probe)",
    )
    axes.axhline(1.0, color="grey", ls="--", lw=1, label="1: neither grows nor shrinks")
    if ok.any() and values[ok].max() / max(values[ok].min(), 1e-300) > 100:
        axes.set_yscale("log")
    axes.set_xlabel("time step t of the probe sequence")
    axes.set_ylabel("spectral norm (dimensionless)")
    axes.legend(fontsize=8, loc="best")
    return figure


def overlaid_test_curves(
    curves: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    title: str,
    ylabel: str,
    diverged: dict[str, int] | None = None,
) -> Figure:
    """Test metric over the baseline at each evaluation, one line per run (log scale).

    ``diverged`` maps a run's label to the step it diverged at: its line ends at its last
    finite value and an x at the top of the axes, in its colour, marks the divergence (a
    run that diverged before its first evaluation is the x alone, in the legend).
    """
    figure, axes = _figure(title)
    diverged = diverged or {}
    colours: dict[str, Any] = {}
    for label, steps, values in curves:
        x, y = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
        ok = _positive(y)  # a diverged run's evaluations stop being finite
        if ok.any():
            (line,) = axes.plot(x[ok], y[ok], "o-", ms=2.5, lw=1.2, label=label)
            colours[label] = line.get_color()
    axes.axhline(1.0, color="grey", ls="--", lw=1, label="baseline")
    axes.set_yscale("log")
    top = axes.get_ylim()[1]
    for label, step in diverged.items():
        colour = colours.get(label)
        axes.plot(
            [step],
            [top],
            "x",
            ms=9,
            mew=2,
            color=colour or "tab:red",
            clip_on=False,
            label=f"{label}: diverged at step {step}" if colour is None else None,
        )
        axes.axvline(step, color=colour or "tab:red", ls=":", lw=1)
    axes.set_ylim(top=top)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(ylabel)
    axes.legend(fontsize=7, loc="best")
    return figure


def free_run_figure(rows: Sequence[dict[str, str]], title: str) -> Figure:
    """An echo state network running free: its prediction fed back as its input, against
    the true series, at each step after teacher forcing ends (rows of ``free_run.csv``:
    step, truth, predicted)."""
    figure, axes = _figure(title)
    steps = _column(rows, "step")
    axes.plot(steps, _column(rows, "truth"), lw=1.6, color="black", label="the series")
    axes.plot(steps, _column(rows, "predicted"), lw=1.2, ls="--", label="running free")
    axes.set_xlabel("steps after teacher forcing ended")
    axes.set_ylabel("value")
    axes.legend(fontsize=8, loc="best")
    return figure
