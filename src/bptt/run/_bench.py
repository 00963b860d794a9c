"""``bptt bench``: a profile's runs, executed, tabulated and reported.

:func:`run_bench` takes the runs planned by the bench (:mod:`bptt.run.bench`),
executes them (finished runs skipped, interrupted ones resumed), writes
``results.csv`` as each run finishes and, at the end, ``report.html``
(:mod:`bptt.run.report`). Each run keeps its own run directory under the bench
directory.

It lives here, above the parts, because it joins two of them: the report reads the
bench's results and the literature's rows, so the bench cannot import the report.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.progress import Progress

from bptt.run.bench import EXECUTORS, PlannedRun, refuse_other_configs, run_all, write_results
from bptt.run.training import make_progress

__all__ = ["run_bench"]


def run_bench(
    runs: Sequence[PlannedRun],
    out_dir: str | Path,
    *,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    progress: bool = True,
    report: bool = True,
) -> list[dict[str, Any]]:
    """Execute the planned runs into ``out_dir``; write ``results.csv`` and the report.

    Args:
        runs: from :func:`bptt.run.plan_bench`.
        out_dir: the bench directory (one run directory per run inside it).
        executor, workers, address: as in :func:`bptt.run.bench.run_all`.
        progress: show a progress bar per run (one at a time) or a line per run.
        report: write ``report.html`` (and each run's own) at the end.

    Returns:
        The results rows (:data:`bptt.run.RESULT_FIELDS`), in plan order.

    Raises:
        ValueError: an unknown executor or a workers count below 1.
        TypeError: runs that are not planned runs.
        ConfigError: a run directory in ``out_dir`` holds a run of another
            configuration than planned (nothing is trained then).
    """
    _check_bench_arguments(runs, executor, workers)
    out = Path(out_dir)
    refuse_other_configs(runs, out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done: dict[int, dict[str, Any]] = {}

    def finished(index: int, row: dict[str, Any]) -> None:
        done[index] = row
        write_results(out / "results.csv", [done[i] for i in sorted(done)])
        if progress and (executor != "local" or workers > 1):
            print(f"[{len(done)}/{len(runs)}] {row['run_dir']}: {row['outcome']}", flush=True)

    one_by_one = progress and executor == "local" and workers == 1
    with _progress_display(one_by_one) as display:
        rows = run_all(
            runs,
            out,
            executor=executor,
            workers=workers,
            address=address,
            progress=display or False,
            on_row=finished,
        )
    if report:
        from bptt.run.report import write_bench_report

        write_bench_report(out, wall_s=time.perf_counter() - start)
    return rows


def _check_bench_arguments(runs: Sequence[PlannedRun], executor: str, workers: int) -> None:
    """Refuse an unknown executor, a worker count below 1 and runs not planned."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}; got {executor!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1; got {workers!r}")
    if not runs or not all(isinstance(run, PlannedRun) for run in runs):
        raise TypeError("runs must be a non-empty list of PlannedRun (from plan_bench)")


@contextlib.contextmanager
def _progress_display(shown: bool) -> Iterator[Progress | None]:
    """One progress bar per run, one run at a time (None where not ``shown``), stopped
    however the runs end."""
    display = make_progress() if shown else None
    if display is not None:
        display.start()
    try:
        yield display
    finally:
        if display is not None:
            display.stop()
