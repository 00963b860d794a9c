"""The ``bptt`` command: ``bptt train`` and ``bptt bench``.

User errors (a bad flag, an invalid config value, an occupied run directory) end
with a one-line message naming the field and exit code 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bptt.bench import BenchSpec, results_table, run_bench
from bptt.config import ConfigError, TrainConfig, load_toml
from bptt.train import train as run_training

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train recurrent networks on long-range tasks and see why they fail.",
)
_err = Console(stderr=True, soft_wrap=True)  # one message, one line
_out = Console(width=max(Console().width, 110))  # tables stay whole when piped


def _fail(message: str) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


@app.command("train")
def train_command(
    config: Annotated[
        Path | None, typer.Option(help="TOML file of config fields; flags override it.")
    ] = None,
    task: Annotated[str | None, typer.Option(help="adding or copy.")] = None,
    length: Annotated[int | None, typer.Option(help="Task length T.")] = None,
    cell: Annotated[str | None, typer.Option(help="rnn, rnn-relu, lstm or gru.")] = None,
    hidden: Annotated[int | None, typer.Option(help="Hidden units.")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam, sgd or rmsprop.")] = None,
    momentum: Annotated[float | None, typer.Option(help="Momentum (sgd, rmsprop).")] = None,
    clip_norm: Annotated[float | None, typer.Option(help="Clip the global gradient norm.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of init, data and test set.")] = None,
    test_size: Annotated[int | None, typer.Option(help="Held-out test sequences.")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Steps between test evaluations.")] = None,
    log_every: Annotated[int | None, typer.Option(help="Steps between metrics rows.")] = None,
    engine: Annotated[str | None, typer.Option(help="auto, generic or fast.")] = None,
    device: Annotated[str | None, typer.Option(help="Torch device, e.g. cpu.")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32 or float64.")] = None,
    flush_denormal: Annotated[
        bool | None,
        typer.Option("--flush-denormal/--no-flush-denormal", help="Flush subnormals to zero."),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads; 0 keeps the default.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory to write.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Write into a directory holding a run.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train one model and write its run directory."""
    flags = {
        "task": task,
        "length": length,
        "cell": cell,
        "hidden": hidden,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "momentum": momentum,
        "clip_norm": clip_norm,
        "seed": seed,
        "test_size": test_size,
        "eval_every": eval_every,
        "log_every": log_every,
        "engine": engine,
        "device": device,
        "dtype": dtype,
        "flush_denormal": flush_denormal,
        "threads": threads,
        "out": None if out is None else str(out),
    }
    try:
        values = load_toml(config) if config is not None else {}
        values.update({k: v for k, v in flags.items() if v is not None})
        cfg = TrainConfig.from_dict(values)
        result = run_training(cfg, progress=progress, overwrite=overwrite)
    except (ConfigError, FileExistsError) as err:
        raise _fail(str(err)) from None
    s = result.summary
    verdict = "[green]solved[/]" if s["solved"] else "[yellow]not solved[/]"
    _out.print(
        f"{s['task']} T={s['length']} {s['cell']}: {s['metric']} {s['final_loss']:.4g} "
        f"(baseline {s['baseline_loss']:.4g}), {verdict} in {s['wall_s']:.1f} s"
    )
    if result.run_dir is not None:
        _out.print(f"run directory: {result.run_dir}")


def _csv_list(text: str, kind: type, name: str) -> tuple:
    try:
        values = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        message = f"{name}: expected a comma-separated list of {kind.__name__}, got {text!r}"
        raise _fail(message) from None
    if not values:
        raise _fail(f"{name}: expected at least one value")
    return values


@app.command("bench")
def bench_command(
    cells: Annotated[str, typer.Option(help="Comma-separated cells.")] = "rnn,lstm",
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks.")] = "adding",
    lengths: Annotated[str, typer.Option(help="Comma-separated lengths.")] = "10,50",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0",
    steps: Annotated[int, typer.Option(help="Optimizer steps per run.")] = 1500,
    hidden: Annotated[int, typer.Option(help="Hidden units.")] = 128,
    out: Annotated[Path, typer.Option(help="Directory for the runs and tables.")] = Path(
        "runs/bench"
    ),
    overwrite: Annotated[bool, typer.Option(help="Replace earlier runs in --out.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run the benchmark matrix and print its table (default: the quick matrix)."""
    spec = BenchSpec(
        cells=_csv_list(cells, str, "cells"),
        tasks=_csv_list(tasks, str, "tasks"),
        lengths=_csv_list(lengths, int, "lengths"),
        seeds=_csv_list(seeds, int, "seeds"),
        base={"steps": steps, "hidden": hidden},
    )
    try:
        rows = run_bench(spec, out, progress=progress, overwrite=overwrite)
    except (ConfigError, FileExistsError) as err:
        raise _fail(str(err)) from None
    _out.print(results_table(rows))
    _out.print(f"tables: {out / 'bench.csv'}, {out / 'bench.json'}")


def main() -> None:
    """Entry point of the ``bptt`` console script."""
    app()
