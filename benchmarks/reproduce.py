"""The literature's long-range results, reproduced with bptt's remedies: a table anyone
can rerun.

Each row trains one recipe on one task at one length for each seed, until the task is
solved (``--stop-when-solved``: the test metric checked every ``--eval-every`` steps)
or the step budget is spent (a row whose model is chosen on a validation split trains
to its end, then scores the test set once), and reports how many seeds solved it, the
median steps and wall time to solve, the final metric, and the published result
beside it. Runs go one at a time (all cores to the one run: on a 2-core machine two
trainings at once, each with threads on every core, ran 10-100x slower), or with
``--workers N`` N at once, each with its share of the cores as threads; each in its
own process and run directory under ``--out``. A finished run is skipped, an
interrupted one resumed from its checkpoint (every 100 steps), so the long rows can be
run over several sessions. ``--deadline`` stops starting runs (and stops those
running, which resume next time) after so many seconds;
``--time-limit`` ends each run cleanly after so many seconds of training in all, and a
later call with a larger one continues it. ``--stack`` trains each row's pending seeds
as one stacked model in this process (``bptt.run.train_stacked``), which pays where a
step is overhead rather than arithmetic (small batches, a GPU).

    python benchmarks/reproduce.py                      # every row, seeds 0, 1, 2
    python benchmarks/reproduce.py --rows copy:1000,adding:1000 --seeds 0
    python benchmarks/reproduce.py --rows adding:5000:lru    # one method's row
    python benchmarks/reproduce.py --table-only         # the table of what has finished
    python benchmarks/reproduce.py --table-only --why   # and why each unsolved run fell short

``--why`` adds a table for every finished run that did not solve its task: its verdict
and how much of the loss gradient reached back over the dependency (the probe's
``ratio_at_dependency``) at initialisation (``bptt diagnose --at-init``) and at the end.

The settings of each recipe cite their source in ``bptt.run.RECIPES``' docstrings.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bptt.run import (
    LITERATURE_ROWS,
    RECIPES,
    ConfigError,
    LiteratureRow,
    TrainConfig,
    diagnose_run,
    load_toml,
    stack_refusal,
    train_stacked,
)

Row = LiteratureRow
ROWS = LITERATURE_ROWS


def _run_dir(out: Path, row: Row, seed: int) -> Path:
    return out / f"{row.task}-T{row.length}-{row.method}-s{seed}"


def _new_run(
    row: Row, seed: int, where: Path, args: argparse.Namespace, threads: int
) -> dict[str, Any]:
    """The config fields of a row's new run for one seed."""
    fields: dict[str, Any] = {
        "task": row.task, "length": row.length, "method": row.method, "seed": seed,
        "eval_every": args.eval_every, "checkpoint_every": 100, "test_size": 1000,
        "device": args.device, "threads": threads, "out": str(where),
        "stop_when_solved": True,  # a row chosen on validation trains on (its settings say)
    }  # fmt: skip
    fields.update(row.settings)
    fields["steps"] = args.steps or row.settings["steps"]
    if args.time_limit:  # ends the run with its summary (time_limited) at the first step past it
        fields["time_limit_s"] = args.time_limit
    return fields


def _esn_command(row: Row, seed: int, where: Path) -> list[str]:
    """An echo state network's row (method ``esn``): ``bptt esn`` on the task, its
    readout fitted at once (a run cut short has no summary: written again)."""
    task = ["--task", row.task, "--length", str(row.length), "--seed", str(seed)]
    settings = [f"--{k.replace('_', '-')}={v}" for k, v in row.settings.items()]
    return [
        sys.executable,
        "-m",
        "bptt",
        "esn",
        *task,
        *settings,
        "--out",
        str(where),
        "--overwrite",
    ]


def _command(row: Row, seed: int, where: Path, args: argparse.Namespace, threads: int) -> list[str]:
    if row.method == "esn":
        return _esn_command(row, seed, where)
    if (where / "config.toml").is_file():  # interrupted or out of time: go on from there
        limit = ["--time-limit-s", str(args.time_limit)]
        return [
            sys.executable,
            "-m",
            "bptt",
            "train",
            "--resume",
            str(where),
            *limit,
            "--no-progress",
        ]
    flags = []
    for name, value in _new_run(row, seed, where, args, threads).items():
        if value is True:
            flags.append("--" + name.replace("_", "-"))
        elif value is not False:
            flags += ["--" + name.replace("_", "-"), str(value)]
    return [sys.executable, "-m", "bptt", "train", *flags, "--no-progress"]


def run_stacked(rows: list[Row], args: argparse.Namespace) -> None:
    """Each row's pending seeds as one stacked model, in this process, with every core
    (``--stack``; pays where a step is overhead: small batches, a GPU). A row the
    stacked engine cannot run (an LRU), a single pending seed, or seeds begun with other
    threads go one at a time as without ``--stack``."""
    threads = len(os.sched_getaffinity(0))
    for row in rows:
        if row.method == "esn":  # nothing to stack: no training
            run_all([row], args)
            continue
        configs: list[TrainConfig] = []
        for _, seed, where in _pending([row], args):
            if not (where / "config.toml").is_file():
                configs.append(TrainConfig.from_dict(_new_run(row, seed, where, args, threads)))
                continue
            saved = TrainConfig.saved_in(where)
            if args.time_limit:  # more time for a run that stopped out of it
                saved = saved.replace(time_limit_s=args.time_limit)
            configs.append(saved)
        if not configs:
            continue
        refusal = "one seed" if len(configs) == 1 else stack_refusal(configs)
        if refusal is not None:
            print(f"{row.key} {row.method}: not stacked ({refusal})", flush=True)
            run_all([row], args)
            continue
        seeds = ", ".join(str(config.seed) for config in configs)
        print(f"{row.key} {row.method} seeds {seeds}: stacked", flush=True)
        train_stacked(configs, progress=True)


_MAY_CHANGE = ("steps", "stop_when_solved", "time_limit_s")


def _stale(where: Path, row: Row) -> str | None:
    """Why the run in ``where`` is not this row's (a recipe renamed or changed since
    it ran), or None when it is (or there is none yet)."""
    try:
        found = TrainConfig.flatten(load_toml(where / "config.toml"))  # nested tables too
    except ConfigError:
        return None if not (where / "config.toml").exists() else "an unreadable config.toml"
    if row.method == "esn":
        wanted = {"task": row.task, "length": row.length, **row.settings}
    else:
        wanted = {"method": row.method, **RECIPES[row.method].settings, **row.settings}
    for name, value in wanted.items():
        if name not in _MAY_CHANGE and found.get(name) != value:
            return f"{name} = {found.get(name)!r}, not {value!r}"
    return None


def _pending(rows: list[Row], args: argparse.Namespace) -> list[tuple[Row, int, Path]]:
    """The runs still to train or to go on with, in table order."""
    pending = []
    for row in rows:
        for seed in args.seeds:
            where = _run_dir(args.out, row, seed)
            stale = _stale(where, row)
            if stale is not None:
                print(f"{where} holds another recipe's run ({stale}): move it away", flush=True)
                continue
            summary = _summary(where)
            if summary is not None and not (summary.get("time_limited") and args.time_limit):
                continue  # finished (a run stopped by a time limit goes on if given more)
            pending.append((row, seed, where))
    return pending


def run_all(rows: list[Row], args: argparse.Namespace) -> None:
    """Each row's seeds, ``args.workers`` runs at a time (each with its share of the
    cores as threads), until the deadline."""
    start = time.monotonic()
    threads = max(1, len(os.sched_getaffinity(0)) // args.workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    pending = _pending(rows, args)
    running: list[subprocess.Popen] = []
    while pending or running:
        while pending and len(running) < args.workers:
            row, seed, where = pending.pop(0)
            command = _command(row, seed, where, args, threads)
            print(f"{row.key} {row.method} seed {seed}: {' '.join(command[3:])}", flush=True)
            running.append(subprocess.Popen(command, start_new_session=True, env=env))
        time.sleep(1)
        running = [p for p in running if p.poll() is None]
        if args.deadline and time.monotonic() - start > args.deadline:
            for process in running:
                os.killpg(process.pid, signal.SIGKILL)  # resumable from its checkpoints
                process.wait()
            print("deadline: stopped; the runs resume from their checkpoints", flush=True)
            return


def _summary(where: Path) -> dict[str, Any] | None:
    try:
        return json.loads((where / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _wall_at(where: Path, summary: dict[str, Any]) -> float:
    """The wall seconds at the first solved evaluation (from metrics.csv): a run that
    trains on after it (chosen on validation) took longer in all."""
    try:
        with open(where / "metrics.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                if int(row["step"]) == summary["solved_step"]:
                    return float(row["wall_s"])
    except (OSError, ValueError, KeyError):
        pass
    return summary["wall_s"]


def _median(values: list[float]) -> str:
    return "-" if not values else f"{statistics.median(values):,.0f}"


def _kept(found: dict[str, Any] | None) -> str:
    value = None if found is None else found.get("ratio_at_dependency")
    return "-" if value is None else f"{value:.2g}"


def why_table(rows: list[Row], args: argparse.Namespace) -> str:
    """For each finished, unsolved run: its verdict and the gradient's reach at the
    dependency at initialisation and at the end (a fresh probe of each model)."""
    lines = [
        "| task | T | method | seed | steps | final / baseline | verdict | gradient kept over "
        "the dependency: at init | at the end |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.method == "esn":  # no recurrence trained: no gradient to show
            continue
        for seed in args.seeds:
            where = _run_dir(args.out, row, seed)
            summary = _summary(where)
            if summary is None or summary["solved"] or _stale(where, row) is not None:
                continue
            try:
                at_init, at_end = diagnose_run(where, at_init=True), diagnose_run(where)
            except ConfigError as err:  # a run made on another device, a damaged file
                lines.append(f"| {row.task} | {row.length} | {row.method} | {seed} | {err} |")
                continue
            final, baseline = summary["final_loss"], summary["baseline_loss"]
            share = "-" if final is None or not baseline else f"{final / baseline:.3g}"
            lines.append(
                f"| {row.task} | {row.length} | {row.method} | {seed} | {summary['steps_done']} "
                f"| {share} | {at_end['verdict']} | {_kept(at_init)} | {_kept(at_end)} |"
            )
    return "\n".join(lines)


def table(rows: list[Row], args: argparse.Namespace) -> str:
    """The markdown table of what has finished."""
    lines = [
        "| task | T | method | seeds solved | median steps to solve | median wall to "
        "solve (s) | final metric (median) | published |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        wheres = [_run_dir(args.out, row, seed) for seed in args.seeds]
        done = [s for s in map(_summary, wheres) if s]
        done = [s for s in done if _stale(_run_dir(args.out, row, s["seed"]), row) is None]
        if not done:
            continue
        solved = [s for s in done if s["solved"]]
        cut = [s.get("steps_done") for s in done if s.get("time_limited") and not s["solved"]]
        # a run chosen on validation may be solved on the test set, never on validation
        steps = [s["solved_step"] for s in solved if s.get("solved_step") is not None]
        walls = [
            _wall_at(_run_dir(args.out, row, s["seed"]), s)
            for s in solved
            if s.get("solved_step") is not None
        ]
        if row.method == "esn":  # fitted at once: its wall is the whole run's
            walls = [s["wall_s"] for s in solved]
        finals = [s["final_loss"] for s in done if s.get("final_loss") is not None]
        metric = done[0]["metric"]
        final = f"{metric} {statistics.median(finals):.3g}" if finals else "-"
        accuracies = [s["accuracy"] for s in done if s.get("accuracy") is not None]
        if accuracies and not finals:  # an ESN's readout: scored by its errors alone
            final = f"accuracy {statistics.median(accuracies):.1%}"
        elif accuracies:
            final += f", accuracy {statistics.median(accuracies):.1%}"
        if cut:
            final += f" (time limit: stopped at step {', '.join(map(str, cut))})"
        lines.append(
            f"| {row.task} | {row.length} | {row.method} | {len(solved)} of {len(done)} "
            f"(of {len(args.seeds)} seeds) | {_median(steps)} | {_median(walls)} | {final} "
            f"| {row.anchor} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="", help="task:length[:method],... (default: every row)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=0, help="step budget (default: the row's)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--deadline", type=float, default=0, help="seconds; 0 for none")
    parser.add_argument(
        "--workers", type=int, default=1, help="runs at once, each with cores/workers threads"
    )
    parser.add_argument(
        "--time-limit", type=float, default=0, help="seconds a run may train (0: no limit)"
    )
    parser.add_argument(
        "--stack",
        action="store_true",
        help="each row's seeds as one stacked model in this process (small batches, a GPU)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce"))
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument(
        "--why", action="store_true", help="also diagnose every unsolved run, at init and end"
    )
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.workers < 1:
        parser.error(f"--workers must be >= 1; got {args.workers}")
    if args.stack and (args.workers != 1 or args.deadline):
        parser.error("--stack trains in this process: not with --workers or --deadline")
    wanted = {r for r in args.rows.split(",") if r.strip()}
    rows = [row for row in ROWS if not wanted or any(row.named_by(name) for name in wanted)]
    unknown = {name for name in wanted if not any(row.named_by(name) for row in ROWS)}
    if unknown:
        known = [f"{r.key}:{r.method}" for r in ROWS]
        parser.error(f"unknown rows {sorted(unknown)}; known (the method may be left out): {known}")
    if args.stack and not args.table_only:
        run_stacked(rows, args)
    elif not args.table_only:
        run_all(rows, args)
    print(table(rows, args))
    if args.why:
        print()
        print(why_table(rows, args))


if __name__ == "__main__":
    main()
