"""The ``bptt`` command: ``bptt train`` and ``bptt bench``.

User errors (a bad flag, an invalid config value, an occupied run directory) end
with a one-line message naming the field and exit code 2, never a traceback. The
flags of ``bptt train`` are made from :class:`bptt.TrainConfig`'s fields, so the two
never disagree.
"""

from __future__ import annotations

import inspect
import json
import re
import warnings
from dataclasses import fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bptt.bench import BenchSpec, results_table, run_bench
from bptt.config import ConfigError, TrainConfig, load_toml
from bptt.diagnose import diagnose
from bptt.diagnose.attractor import (
    basin_gradient_map,
    image_formats,
    plot_basin_gradients,
    two_basin_cell,
)
from bptt.precision import flush_denormal
from bptt.reservoir._esn import ESNConfig, run_esn
from bptt.train import (
    NonFiniteError,
    RunDirectoryBusy,
    RunDirectoryError,
    RunStopped,
    json_safe,
    load_run,
    test_set,
)
from bptt.train import resume as resume_training
from bptt.train import train as run_training

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train recurrent networks on long-range tasks and see why they fail.",
)
_err = Console(stderr=True, soft_wrap=True)  # one message, one line
_out = Console(width=max(Console().width, 140))  # tables stay whole when piped


def _fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line; the exit to raise (2: bad input; 1: the run failed)."""
    _err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code=code)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr, without Python's file and line."""
    text = " ".join(str(message).split())  # one line, whatever the message held
    _err.print(f"[yellow]warning:[/] {escape(text)}", highlight=False)


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"bptt {version('bptt')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("bptt (not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Train recurrent networks on long-range tasks and see why they fail."""
    warnings.showwarning = _show_warning


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
    """One optional CLI flag per TrainConfig field."""
    return _dataclass_parameters(TrainConfig)


def _dataclass_parameters(cls: type, skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One optional CLI flag per field of a config dataclass, typed and documented from it."""
    docs = _attribute_docs(cls.__doc__ or "")
    parameters = []
    for f in fields(cls):
        if f.name in skip:
            continue
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
    config: Path | None = None,
    resume: Path | None = None,
    restart: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **flags,
) -> None:
    """Train one model and write its run directory (flags override --config)."""
    try:
        given = {k: v for k, v in flags.items() if v is not None}
        if restart and resume is None:
            raise ConfigError("restart", "applies with --resume only")
        if resume is not None:
            steps = given.pop("steps", None)  # the one setting a resumed run may move
            if given or config is not None:
                field = next(iter(given), "config")
                message = (
                    "--resume continues a run with its own config.toml (only --steps moves its end)"
                )
                raise ConfigError(field, message)
            result = resume_training(resume, steps=steps, progress=progress, restart=restart)
        else:
            values = load_toml(config) if config is not None else {}
            values.update(given)
            cfg = TrainConfig.from_dict(values)
            if cfg.out is None:
                _err.print("note: no --out given: this run writes no files", highlight=False)
            result = run_training(cfg, progress=progress, overwrite=overwrite)
    except (ConfigError, FileExistsError, RunDirectoryBusy, RunDirectoryError) as err:
        raise _fail(str(err)) from None
    except (NonFiniteError, RunStopped) as err:
        raise _fail(str(err), code=1) from None
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
        inspect.Parameter(
            "resume",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Optional[Path],  # noqa: UP045
                typer.Option(
                    help="Continue the run in this directory from its last checkpoint "
                    "(with --steps, on to a new end)."
                ),
            ],
        ),
        inspect.Parameter(
            "restart",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[
                bool,
                typer.Option(
                    help="With --resume: train the run again from step 0 when none of its "
                    "checkpoints is intact."
                ),
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
    methods: Annotated[
        str, typer.Option(help="Comma-separated methods (bptt.methods) to add; none by default.")
    ] = "",
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
        methods=tuple(m for m in methods.split(",") if m.strip()),
    )
    try:
        rows = run_bench(spec, out, progress=progress, overwrite=overwrite)
    except (ConfigError, FileExistsError) as err:
        raise _fail(str(err)) from None
    _out.print(results_table(rows))
    _out.print(f"tables: {out / 'bench.csv'}, {out / 'bench.json'}")


@app.command("diagnose")
def diagnose_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    probe: Annotated[int, typer.Option(help="Probe sequences (from the run's test set).")] = 32,
    dependency_length: Annotated[
        Optional[int],  # noqa: UP045 - typer needs it
        typer.Option(help="How far back the task depends (default: the task's own)."),
    ] = None,
) -> None:
    """Diagnose a trained model: exploding, vanishing or healthy, with the numbers."""
    try:
        if probe < 1:
            raise ConfigError("probe", f"must be >= 1; got {probe}")
        with _err.status(f"loading {run_dir}"):
            config, task, model = load_run(run_dir)
            x, _ = test_set(config, task)
        length = task.dependency_length if dependency_length is None else dependency_length
        if length < 1:
            raise ConfigError("dependency_length", f"must be >= 1; got {length}")
        steps = x.shape[1]
        with (
            _err.status(f"diagnosing {min(probe, x.shape[0])} probe sequences of {steps} steps"),
            flush_denormal(config.flush_denormal),
        ):
            found = diagnose(model, x[:probe], length)
    except ConfigError as err:
        raise _fail(str(err)) from None
    if as_json:
        typer.echo(json.dumps(json_safe(found.to_dict()), indent=2))
        return
    colour = {"exploding": "red", "vanishing": "yellow", "healthy": "green"}[found.verdict]
    _out.print(f"verdict: [bold {colour}]{found.verdict}[/]")
    for reason in found.reasons:
        _out.print(f"  because {reason}")
    table = Table(title=f"diagnosis of {run_dir}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in found.numbers.items():
        table.add_row(
            key,
            "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value),
        )
    _out.print(table)
    for remedy in found.remedies:
        _out.print(f"  remedy: {remedy}")


def _number_text(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def esn_command(
    out: Optional[Path] = None,  # noqa: UP045
    overwrite: bool = False,
    progress: bool = True,
    **flags,
) -> None:
    """Fit an echo state network (fixed reservoir, ridge readout) and write its run directory."""
    try:
        values = {k: v for k, v in flags.items() if v is not None}
        if out is not None:
            values["out"] = str(out)
        summary = run_esn(ESNConfig.from_dict(values), overwrite=overwrite, progress=progress)
    except (ConfigError, ImportError) as err:
        raise _fail(str(err)) from None
    for key, value in summary.items():
        _out.print(f"{key}: {_number_text(value)}")
    if out is None:
        _err.print("note: no --out given: this run writes no files", highlight=False)


esn_command.__signature__ = inspect.Signature(
    [
        *_dataclass_parameters(ESNConfig, skip=("out",)),
        inspect.Parameter(
            "out",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[Optional[Path], typer.Option(help="Run directory to write.")],  # noqa: UP045
        ),
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
            annotation=Annotated[bool, typer.Option(help="Show the stages as they run.")],
        ),
    ]
)
app.command("esn")(esn_command)


@app.command("attractor")
def attractor_command(
    out: Annotated[
        Path, typer.Option(help="Image file to write (.png, .pdf, .svg, ...), or a directory.")
    ] = Path("attractor.png"),
    steps: Annotated[int, typer.Option(help="Steps run from each start (1 to 10,000).")] = 30,
    resolution: Annotated[int, typer.Option(help="Grid points per side (2 to 1,001).")] = 101,
) -> None:
    """Draw the two-basin picture: the gradient vanishes inside a basin, explodes at its edge."""
    path = out / "attractor.png" if out.is_dir() else out
    if path.exists() and not path.is_file():
        raise _fail(f"out: {out} is neither a directory nor a regular file")
    if not path.suffix:
        path = path.with_suffix(".png")
    try:
        if path.suffix.lstrip(".").lower() not in image_formats():
            known = ", ".join(sorted(image_formats()))
            raise ValueError(f"out: {path.suffix} is not an image format; use one of {known}")
        with _err.status(f"{resolution}x{resolution} starts, {steps} steps each"):
            result = basin_gradient_map(two_basin_cell(), resolution=resolution, steps=steps)
            path = plot_basin_gradients(result, path)
    except ValueError as err:
        raise _fail(str(err)) from None
    except OSError as err:
        raise _fail(f"out: cannot write {path}: {err.strerror or err}") from None
    norms = result["norms"]
    _out.print(
        f"||dh_T/dh_0|| over {resolution}x{resolution} starts, T={steps}: "
        f"median {norms.median().item():.3g}, max {norms.max().item():.3g} (at the boundary)"
    )
    _out.print(f"figure: {path}")


def main() -> None:
    """Entry point of the ``bptt`` console script."""
    app()
