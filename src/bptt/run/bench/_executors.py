"""Where a bench's runs execute: here one at a time, here in worker processes that
share the cores, or on a Ray cluster.

On a 2-core machine two PyTorch trainings at once, each with OpenMP threads on every
core, ran 10-100x slower than one (threads waiting on each other), so the default
runs one run at a time with every core. ``workers=N`` gives each of N processes
``cores // N`` threads, so that threads never exceed the cores. Ray pins each task to
its share of CPUs (``num_cpus``) and the run sets its thread count to the same share.

Every executor calls :func:`execute_run` for each run: a finished run is skipped (its
row read from its summary), an interrupted one resumed from its newest checkpoint
(bit for bit on the CPU), a new one trained; so a bench killed at any point and
started again completes only what is missing. :func:`train_planned_stacked` trains the
planned runs that share a model as one stacked model instead (``--stack``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any, cast

from rich.progress import Progress

from bptt.run.bench._plan import PlannedRun, refuse_other_configs
from bptt.run.bench._results import is_finished, result_row
from bptt.run.esn import ESNConfig, run_esn
from bptt.run.training import (
    TrainConfig,
    free_cores,
    keep_freed_memory,
    read_summary,
    resume,
    shared_settings,
    stack_refusal,
    train,
    train_stacked,
)

__all__ = ["EXECUTORS", "available_cores", "execute_run", "run_all", "train_planned_stacked"]

EXECUTORS = ("local", "ray")


def available_cores() -> int:
    """The cores this process may use that other processes leave free (its affinity
    mask less the cores kept busy, :func:`bptt.run.training.free_cores`)."""
    return free_cores()


def execute_run(
    run: PlannedRun, out_dir: str | Path, threads: int, progress: Any = False
) -> dict[str, Any]:
    """Skip, resume or train one run in ``out_dir / run.name``; its results row.

    Args:
        run: the planned run.
        out_dir: the bench directory.
        threads: torch threads for a new run (a resumed one keeps its own, which its
            results depend on in the last bits).
        progress: as in :func:`bptt.run.train`.
    """
    where = Path(out_dir) / run.name
    if not is_finished(run, read_summary(where)):
        if run.kind == "esn":
            run_esn(cast(ESNConfig, run.config(str(where), threads)), overwrite=True)
        elif (where / "config.toml").is_file():
            resume(where, progress=progress)
        else:
            config = cast(TrainConfig, run.config(str(where), threads))  # kind "train"
            train(config, progress=progress, overwrite=True)
    summary = read_summary(where)  # the row of a run is always read from its file
    if summary is None:
        raise RuntimeError(f"{where} finished without a readable summary.json")
    return result_row(run, summary)


def run_all(
    runs: Sequence[PlannedRun],
    out_dir: Path,
    *,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    progress: Any = False,
    on_row: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every run's results row, in the order of ``runs``.

    Args:
        runs: the planned runs.
        out_dir: the bench directory.
        executor: ``local`` or ``ray``.
        workers: runs at once (local: processes sharing the cores; ray: tasks, each
            with ``cores // workers`` CPUs of the cluster, 1 at least).
        address: a Ray cluster's address (None: start a local one for the bench).
        progress: a ``rich`` Progress for one-at-a-time local runs, or False.
        on_row: ``on_row(index, row)`` as each run finishes, in any order.

    The arguments are checked by :func:`bptt.run.run_bench`, which calls this.
    """
    rows: list[dict[str, Any] | None] = [None] * len(runs)
    if executor == "ray":
        finished = _on_ray(runs, out_dir, workers, address)
    elif workers == 1:
        finished = _here(runs, out_dir, available_cores(), progress)
    else:
        finished = _in_processes(runs, out_dir, workers)
    for index, row in finished:
        rows[index] = row
        if on_row is not None:
            on_row(index, row)
    return [row for row in rows if row is not None]


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Threads for each of ``workers`` runs at once, so that they never exceed the cores."""
    return max(1, (cores or available_cores()) // workers)


def _here(
    runs: Sequence[PlannedRun], out_dir: Path, threads: int, progress: Any
) -> Iterator[tuple[int, dict[str, Any]]]:
    for index, run in enumerate(runs):
        yield index, execute_run(run, out_dir, threads, progress)


def _in_processes(
    runs: Sequence[PlannedRun], out_dir: Path, workers: int
) -> Iterator[tuple[int, dict[str, Any]]]:
    threads = threads_per_worker(workers)
    # spawn: a forked child would inherit torch's thread pool in whatever state it was
    context = get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_limit_threads, initargs=(threads,)
    ) as pool:
        futures = {pool.submit(execute_run, run, out_dir, threads): i for i, run in enumerate(runs)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _limit_threads(threads: int) -> None:
    """Worker start-up: OpenMP and MKL pools no larger than the worker's share, and
    freed memory kept for the next step (:func:`keep_freed_memory`)."""
    import torch

    keep_freed_memory()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)


def _on_ray(
    runs: Sequence[PlannedRun], out_dir: Path, workers: int, address: str | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the Ray executor needs Ray: pip install 'bptt[ray]' (or pip install ray)"
        ) from None
    started = not ray.is_initialized()
    if started:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is None:
            options["num_cpus"] = available_cores()
        ray.init(address=address, **options)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        share = threads_per_worker(workers, cpus)
        task = ray.remote(num_cpus=share, max_retries=0)(_ray_task)
        pending = {
            task.remote(run, str(Path(out_dir).resolve()), share): i for i, run in enumerate(runs)
        }
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started:
            ray.shutdown()


def _ray_task(run: PlannedRun, out_dir: str, threads: int) -> dict[str, Any]:
    _limit_threads(threads)
    return execute_run(run, out_dir, threads)


def train_planned_stacked(
    runs: Sequence[PlannedRun],
    out: Path,
    *,
    progress: bool | Progress = False,
    only_stackable: bool = False,
) -> None:
    """The unfinished trainings among planned runs, those that share
    :data:`~bptt.run.SHARED_FIELDS` trained together as one stack, in ``out``: a new run with every
    core, a begun one with its own config.toml (its threads among it), from its newest
    checkpoint. ``bptt train --seeds ... --stack`` (one configuration) and ``bptt bench
    --stack`` (``only_stackable``: a run alone in its group, or a group the stacked
    engine cannot run, is left to the bench's executors).

    Raises:
        ConfigError: as :func:`refuse_other_configs`, or as
            :func:`~bptt.run.train_stacked`.
        Others: as :func:`~bptt.run.train_stacked`.
    """
    refuse_other_configs(runs, out)
    threads = available_cores()  # once: a run's threads are a field its stack shares
    groups: dict[str, list[TrainConfig]] = {}
    for run in runs:
        where = out / run.name
        if run.kind != "train" or is_finished(run, read_summary(where)):
            continue
        if (where / "config.toml").is_file():
            config = TrainConfig.saved_in(where)
        else:
            config = cast(TrainConfig, run.config(str(where), threads))
        key = json.dumps(shared_settings(config), sort_keys=True, default=str)
        groups.setdefault(key, []).append(config)
    for configs in groups.values():
        if only_stackable and (len(configs) < 2 or stack_refusal(configs) is not None):
            continue
        train_stacked(configs, progress=progress, overwrite=True)
