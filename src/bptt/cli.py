"""The ``bptt`` command: ``bptt train`` and ``bptt bench``.

User errors (a bad flag, an invalid config value, an occupied run directory) end
with a one-line message naming the field and exit code 2, never a traceback. The
flags of ``bptt train`` are made from :class:`bptt.TrainConfig`'s fields, so the two
never disagree.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from bptt.bench import BenchSpec, results_table, run_bench
from bptt.config import ConfigError, TrainConfig, load_toml
from bptt.train import NonFiniteError
from bptt.train import train as run_training

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train recurrent networks on long-range tasks and see why they fail.",
)
_err = Console(stderr=True, soft_wrap=True)  # one message, one line
_out = Console(width=max(Console().width, 140))  # tables stay whole when piped


def _fail(message: str) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


def _attribute_docs(doc: str) -> dict[str, str]:
    """``name: text`` entries of a Google-style "Attributes:" section, one line each."""
    docs: dict[str, str] = {}
    current = None
    section = doc.split("Attributes:", 1)[1]
    for line in section.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        head, _, rest = stripped.partition(": ")
        if line.startswith(" " * 8) and not line.startswith(" " * 12) and rest and " " not in head:
            current = head
            docs[current] = rest
        elif current is not None:
            docs[current] += " " + stripped
    # plain text for the terminal: drop reST roles and literals
    return {k: re.sub(r":\w+:`([^`]+)`", r"\1", v).replace("``", "") for k, v in docs.items()}


def _config_parameters() -> list[inspect.Parameter]:
    """One optional CLI flag per config field, typed and documented from the dataclass."""
    docs = _attribute_docs(TrainConfig.__doc__ or "")
    parameters = []
    for f in fields(TrainConfig):
        kind = str if "choices" in f.metadata else f.metadata["kind"]
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            flag = f"{flag}/--no-{f.name.replace('_', '-')}"
        option = typer.Option(flag, help=docs.get(f.name, ""), show_default=False)
        parameters.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[Optional[kind], option],  # noqa: UP045 - typer needs it
            )
        )
    return parameters


def train_command(
    config: Path | None = None, overwrite: bool = False, progress: bool = True, **flags
) -> None:
    """Train one model and write its run directory (flags override --config)."""
    try:
        values = load_toml(config) if config is not None else {}
        values.update({k: v for k, v in flags.items() if v is not None})
        cfg = TrainConfig.from_dict(values)
        result = run_training(cfg, progress=progress, overwrite=overwrite)
    except (ConfigError, FileExistsError) as err:
        raise _fail(str(err)) from None
    except NonFiniteError as err:
        _err.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(code=1) from None
    s = result.summary
    verdict = "[green]solved[/]" if s["solved"] else "[yellow]not solved[/]"
    _out.print(
        f"{s['task']} T={s['length']} {s['cell']}: {s['metric']} {s['final_loss']:.4g} "
        f"(baseline {s['baseline_loss']:.4g}), {verdict} in {s['wall_s']:.1f} s"
    )
    if result.run_dir is not None:
        _out.print(f"run directory: {result.run_dir}")


train_command.__signature__ = inspect.Signature(
    [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Optional[Path],  # noqa: UP045
                typer.Option(help="TOML file of config fields; flags override it."),
            ],
        ),
        *_config_parameters(),
        inspect.Parameter(
            "overwrite",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[bool, typer.Option(help="Write into a directory holding a run.")],
        ),
        inspect.Parameter(
            "progress",
            inspect.Parameter.KEYWORD_ONLY,
            default=True,
            annotation=Annotated[bool, typer.Option(help="Show a progress bar.")],
        ),
    ]
)
app.command("train")(train_command)


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
    clip_demo: Annotated[
        bool, typer.Option(help="Add the clipping demonstration (3 short runs).")
    ] = True,
    out: Annotated[Path, typer.Option(help="Directory for the runs and tables.")] = Path(
        "runs/bench"
    ),
    overwrite: Annotated[bool, typer.Option(help="Replace earlier runs in --out.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run the benchmark and print its table (default: the quick benchmark)."""
    spec = BenchSpec(
        cells=_csv_list(cells, str, "cells"),
        tasks=_csv_list(tasks, str, "tasks"),
        lengths=_csv_list(lengths, int, "lengths"),
        seeds=_csv_list(seeds, int, "seeds"),
        base={"steps": steps, "hidden": hidden},
        clip_demo=clip_demo,
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
