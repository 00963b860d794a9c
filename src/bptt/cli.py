"""The ``bptt`` command: ``train``, ``esn``, ``bench``, ``report``, ``diagnose``,
``attractor``.

Built with click on top of :mod:`bptt.run`. The flags of ``train`` and ``esn`` are
made from the fields of :class:`bptt.run.TrainConfig` and :class:`bptt.run.ESNConfig`
(help from each field's description, choices from the registries of tasks, cells and
recipes), so the configuration and the command line never disagree. A user error (a
bad flag, an invalid value, an occupied run directory) ends with one line naming the
field and exit code 2; a run that fails (a non-finite step with ``--nonfinite raise``,
a full disk) with one line and exit code 1; never a traceback.
"""

from __future__ import annotations

import json
import time
import types
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn, Union, get_args, get_origin

import click
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bptt.diagnose import NUMBER_KEYS
from bptt.diagnose.attractor import (
    basin_gradient_map,
    image_formats,
    plot_basin_gradients,
    two_basin_cell,
)
from bptt.run import (
    EXECUTORS,
    PROFILES,
    Checkpoints,
    ConfigError,
    ConfigModel,
    ESNConfig,
    NonFiniteError,
    RunDirectoryBusy,
    RunDirectoryError,
    RunStopped,
    RunSummary,
    TrainConfig,
    TrainResult,
    diagnose_run,
    field_choices,
    leaderboard,
    load_toml,
    parse_seeds,
    plan_bench,
    plan_seeds,
    run_bench,
    run_esn,
    train_planned_stacked,
    write_report,
)
from bptt.run import resume as resume_training
from bptt.run import train as run_training

__all__ = ["app", "main"]

_err = Console(stderr=True, soft_wrap=True)  # one message, one line
_out = Console(width=max(Console().width, 140))  # tables stay whole when piped
_HELP_WIDTH = 100


class _Failed(click.ClickException):
    """A message for the user, already one line; exit 2 (bad input)."""

    exit_code = 2


class _RunFailed(_Failed):
    """A message for the user, already one line; exit 1 (the run failed)."""

    exit_code = 1


class _Interrupted(click.ClickException):
    """Ctrl-C during a run: one line saying how to go on; exit 130 (as a shell's SIGINT)."""

    exit_code = 130


def _interrupted(
    out: Path | None, *, since: float | None = None, seeds: bool = False
) -> _Interrupted:
    """What to do after a run in ``out`` (None: it wrote nothing) was interrupted; a new
    run's files are those written ``since`` it started (an earlier run's, which
    ``--overwrite`` had not yet removed, are not its own)."""
    if out is None:
        return _Interrupted("interrupted; the run wrote no files (no --out)")
    if seeds:
        return _Interrupted(f"interrupted; the same command again completes the seeds in {out}")

    def ours(path: Path) -> bool:
        try:
            return since is None or path.stat().st_mtime >= since
        except OSError:
            return False

    if not ours(out / "config.toml"):
        return _Interrupted(f"interrupted before the run wrote anything: {out} is as it was")
    step = Checkpoints(out / "checkpoints").newest_intact_step()
    if step is None or not ours(out / "checkpoints" / f"step-{step:09d}.pt"):
        return _Interrupted(
            f"interrupted before the first checkpoint: `bptt train --resume {out} --restart` "
            "trains it again from step 0"
        )
    return _Interrupted(
        f"interrupted; the last checkpoint is step {step}: `bptt train --resume {out}` "
        "continues from it"
    )


class _OneLineErrors(click.Group):
    """Every click error (a bad flag, a missing argument) as one ``error:`` line."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,  # ignored: an error is always one line and an exit
        **extra: Any,
    ) -> NoReturn:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as err:
            _err.print(f"[bold red]error:[/] {escape(_one_line(err))}", highlight=False)
            raise SystemExit(err.exit_code) from None
        except click.Abort:
            _err.print("aborted", highlight=False)
            raise SystemExit(1) from None
        raise SystemExit(code if isinstance(code, int) else 0)


def _one_line(err: click.ClickException) -> str:
    return " ".join(err.format_message().split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr, without Python's file and line."""
    text = " ".join(str(message).split())
    _err.print(f"[yellow]warning:[/] {escape(text)}", highlight=False)


def _version() -> str:
    try:
        return version("bptt")
    except PackageNotFoundError:  # a source tree that was never installed
        return "(not installed)"


@click.group(
    cls=_OneLineErrors,
    context_settings={"max_content_width": _HELP_WIDTH, "help_option_names": ["-h", "--help"]},
)
@click.version_option(_version(), "--version", prog_name="bptt", message="%(prog)s %(version)s")
def app() -> None:
    """Train recurrent networks on long-range tasks and see why they fail."""
    warnings.showwarning = _show_warning


# --- flags made from a configuration model ------------------------------------------------


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _base_type(annotation: Any) -> Any:
    """The annotation without ``| None`` and Annotated metadata."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    while hasattr(annotation, "__metadata__"):
        annotation = get_args(annotation)[0]
    return annotation


def _option(name: str, field: FieldInfo):
    """One flag for one field, as a click decorator: not given by default, so the
    config file and the model's defaults decide."""
    kind = _base_type(field.annotation)
    described = f"{field.description}{_default_note(field)}"
    if kind is bool:
        flag = f"{_flag(name)}/--no-{_flag(name)[2:]}"
        return click.option(flag, name, default=None, help=described)
    allowed = field_choices(field)
    if allowed is not None:  # listed in the help; the config refuses another name
        help_text = f"{field.description} One of: {', '.join(allowed)}.{_default_note(field)}"
        return click.option(_flag(name), name, metavar="NAME", help=help_text)
    param_type = {int: click.INT, float: click.FLOAT}.get(kind, click.STRING)
    return click.option(_flag(name), name, type=param_type, help=described)


def _default_note(field: FieldInfo) -> str:
    """`` [default: 128]`` for a field with a fixed default; nothing for one derived at
    validation (None: from the task, the recipe or another field)."""
    default = field.default
    if default is None or default is PydanticUndefined:
        return ""
    if isinstance(default, bool):
        default = str(default).lower()
    return f" [default: {default}]"


def _model_options(model: type[ConfigModel], skip: tuple[str, ...] = ()):
    """A decorator adding one flag per key of ``model``'s flat form (but ``skip``), in
    order: a nested setting's kind and each of its settings is a flag of its own."""

    def add(command):
        for name, field in reversed(model.flag_fields().items()):
            if name not in skip:
                command = _option(name, field)(command)
        return command

    return add


def _config_file(path: Path | None) -> dict[str, Any]:
    """The flat keys of a ``--config`` file (its nested tables flattened), which flags
    override key by key."""
    return TrainConfig.flatten(load_toml(path)) if path is not None else {}


def _given(flags: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flags.items() if v is not None}


# --- bptt train ------------------------------------------------------------------------------


@app.command("train")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="TOML file of config fields; flags override it.",
)
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    help="Continue the run in this directory from its last checkpoint (with --steps, on "
    "to a new end).",
)
@click.option(
    "--restart",
    is_flag=True,
    help="With --resume: train the run again from step 0 when it has no intact checkpoint "
    "(the steps it logged are logged anew).",
)
@_model_options(TrainConfig)
@click.option("--overwrite", is_flag=True, help="Write into a directory holding a run.")
@click.option(
    "--no-out",
    is_flag=True,
    help="Write no files, even where --config names an out (a run's own config.toml does).",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.option(
    "--seeds",
    help="Train once per seed (0-7, 0,3,5): one run directory each under --out, then a "
    "table; the same command again completes what is missing.",
)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="With --seeds: runs at once, each with cores/workers threads.",
)
@click.option(
    "--report/--no-report",
    default=True,
    help="With --seeds: write report.html over the seeds' runs.",
)
@click.option(
    "--stack",
    is_flag=True,
    help="With --seeds: train the seeds as one stacked model, one batched matmul a step "
    "for all (pays where a step is overhead: small batches, a GPU).",
)
def train_command(
    config_file: Path | None,
    resume: Path | None,
    restart: bool,
    overwrite: bool,
    no_out: bool,
    progress: bool,
    seeds: str | None,
    workers: int,
    report: bool,
    stack: bool,
    **flags: Any,
) -> None:
    """Train one model and write its run directory (flags override --config)."""
    try:
        given = _given(flags)
        _refuse_train_flag_mix(given, resume, restart, no_out, seeds, workers, report, stack)
        if seeds is not None:
            if resume is not None or overwrite:
                flag = "resume" if resume is not None else "overwrite"
                message = "not with --seeds (run the same command again to complete its seeds)"
                raise ConfigError(flag, message)
            values = _config_file(config_file)
            values.update(given)
            try:
                _train_seeds(values, parse_seeds(seeds), workers, progress, report, stack)
            except KeyboardInterrupt:
                out = values.get("out")
                raise _interrupted(None if out is None else Path(out), seeds=True) from None
            return
        if resume is not None:
            result = _resume_run(resume, given, config_file, progress, restart)
        else:
            result = _new_run(given, config_file, no_out, progress, overwrite)
    except (ConfigError, FileExistsError, RunDirectoryBusy, RunDirectoryError) as err:
        raise _Failed(str(err)) from None
    except (NonFiniteError, RunStopped) as err:
        raise _RunFailed(str(err)) from None
    _print_run_result(result)


def _refuse_train_flag_mix(
    given: dict[str, Any],
    resume: Path | None,
    restart: bool,
    no_out: bool,
    seeds: str | None,
    workers: int,
    report: bool,
    stack: bool,
) -> None:
    """Refuse the flags of ``bptt train`` that do not go together."""
    if restart and resume is None:
        raise ConfigError("restart", "applies with --resume only")
    if no_out and (given.get("out") is not None or resume is not None or seeds is not None):
        raise ConfigError("--no-out", "not with --out, --resume or --seeds, which write files")
    if workers < 1 or (workers != 1 and seeds is None):
        raise ConfigError("workers", f"must be >= 1, and given with --seeds; got {workers}")
    if not report and seeds is None:
        raise ConfigError("report", "--no-report applies with --seeds only")
    if stack and (seeds is None or workers != 1):
        message = "applies with --seeds only, and runs them in one process (no --workers)"
        raise ConfigError("stack", message)


def _resume_run(
    resume: Path, given: dict[str, Any], config_file: Path | None, progress: bool, restart: bool
) -> TrainResult:
    """``bptt train --resume``: only --steps and --time-limit-s may move the run's end."""
    steps = given.pop("steps", None)  # what a resumed run may move: its end,
    limit = given.pop("time_limit_s", None)  # and its time
    if given or config_file is not None:
        field = next(iter(given), "config")
        message = (
            "--resume continues a run with its own config.toml (only --steps and "
            "--time-limit-s move its end)"
        )
        raise ConfigError(field, message)
    try:
        return resume_training(
            resume, steps=steps, progress=progress, restart=restart, time_limit_s=limit
        )
    except KeyboardInterrupt:
        raise _interrupted(resume) from None


def _new_run(
    given: dict[str, Any],
    config_file: Path | None,
    no_out: bool,
    progress: bool,
    overwrite: bool,
) -> TrainResult:
    """``bptt train`` from flags over an optional --config file."""
    values = _config_file(config_file)
    values.update(given)
    if no_out:
        values.pop("out", None)
    config = TrainConfig.from_dict(values)
    if config.out is None:
        _err.print("note: no --out given: this run writes no files", highlight=False)
    started = time.time()
    try:
        return run_training(config, progress=progress, overwrite=overwrite)
    except KeyboardInterrupt:
        out = None if config.out is None else Path(config.out)
        raise _interrupted(out, since=started) from None


def _print_run_result(result: TrainResult) -> None:
    """The run's outcome, its verdict and remedies, and where its files are."""
    s = RunSummary.model_validate(result.summary)
    verdict = "[green]solved[/]" if s.solved else "[yellow]not solved[/]"
    _out.print(
        f"{s.task} T={s.length} {s.cell}: {s.metric} {s.final_loss:.4g} "
        f"(baseline {s.baseline_loss:.4g}), {verdict} in {s.wall_s:.1f} s"
    )
    if s.verdict is not None and s.diagnosis is not None:
        _print_verdict(s.verdict, s.diagnosis.reasons, s.diverged, s.diagnosis.history)
        _print_remedies([remedy.model_dump() for remedy in s.diagnosis.remedies])
    if result.run_dir is not None:
        _out.print(f"run directory: {result.run_dir}")


def _train_seeds(
    values: dict[str, Any],
    seeds: list[int],
    workers: int,
    progress: bool,
    report: bool,
    stack: bool = False,
) -> None:
    """``bptt train --seeds``: each seed's run, executed as a bench's (or all of them
    stacked into one model), then the table."""
    runs = plan_seeds(values, seeds)
    out = Path(values["out"])
    if stack:
        train_planned_stacked(runs, out, progress=progress)
    rows = run_bench(runs, out, workers=workers, progress=progress, report=report)
    _out.print(leaderboard(rows, title=f"bptt train --seeds: leaderboard of {out}"))
    _out.print(f"results: {out / 'results.csv'}")
    if report:
        _out.print(f"report: {out / 'report.html'}")


# --- bptt esn --------------------------------------------------------------------------------


def _number_text(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command("esn")
@_model_options(ESNConfig, skip=("out",))
@click.option("--out", type=click.Path(path_type=Path), help="Run directory to write.")
@click.option("--overwrite", is_flag=True, help="Write into a directory holding a run.")
@click.option("--progress/--no-progress", default=True, help="Show the stages as they run.")
def esn_command(out: Path | None, overwrite: bool, progress: bool, **flags: Any) -> None:
    """Fit an echo state network (fixed reservoir, ridge readout) and write its run directory."""
    try:
        values = _given(flags)
        if out is not None:
            values["out"] = str(out)
        summary = run_esn(ESNConfig.from_dict(values), overwrite=overwrite, progress=progress)
    except (ConfigError, ImportError, RunDirectoryBusy, RunDirectoryError) as err:
        raise _Failed(str(err)) from None
    for key, value in summary.items():
        _out.print(f"{key}: {_number_text(value)}")
    if out is None:
        _err.print("note: no --out given: this run writes no files", highlight=False)


# --- bptt bench ------------------------------------------------------------------------------


def _csv_list(text: str, kind: type, name: str) -> tuple:
    try:
        values = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise _Failed(
            f"{name}: expected a comma-separated list of {kind.__name__}, got {text!r}"
        ) from None
    if not values:
        raise _Failed(f"{name}: expected at least one value")
    return values


@app.command("bench")
@click.option(
    "--profile",
    type=click.Choice(PROFILES),
    default="quick",
    show_default=True,
    help="quick: the lectures' story in minutes; full: the literature's long-range table; "
    "matrix: --tasks x --lengths x --methods x --seeds.",
)
@click.option("--tasks", default="", help="Comma-separated tasks (filter, or matrix axis).")
@click.option("--methods", default="", help="Comma-separated recipes (filter, or matrix axis).")
@click.option("--lengths", default="", help="Comma-separated lengths (filter, or matrix axis).")
@click.option("--seeds", default="", help="Comma-separated seeds (default: the profile's).")
@click.option("--steps", default=None, type=int, help="Optimizer steps of every trained run.")
@click.option("--hidden", default=None, type=int, help="Hidden units of every trained run.")
@click.option(
    "--out",
    default="runs/bench",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Bench directory: one run directory per run, results.csv, report.html.",
)
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    default="local",
    show_default=True,
    help="local: here; ray: on a Ray cluster (pip install 'bptt[ray]').",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=int,
    help="Runs at once, each with cores/workers threads (1: one run with every core).",
)
@click.option("--address", default=None, help="Ray cluster address (default: a local one).")
@click.option("--report/--no-report", default=True, help="Write report.html at the end.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@click.option(
    "--stack",
    is_flag=True,
    help="Train the runs that share a model and a task (differing in seed, learning rate, "
    "clipping, ...) as one stacked model each (here, one process); the others as usual.",
)
def bench_command(
    profile: str,
    tasks: str,
    methods: str,
    lengths: str,
    seeds: str,
    steps: int | None,
    hidden: int | None,
    out: Path,
    executor: str,
    workers: int,
    address: str | None,
    report: bool,
    progress: bool,
    stack: bool,
) -> None:
    """Run a benchmark profile; print the leaderboard and the report's path.

    Finished runs in --out are skipped and interrupted ones resumed, so a bench
    stopped at any point completes only what is missing when run again.
    """
    if workers < 1:
        raise _Failed(f"workers: must be >= 1; got {workers}")
    if stack and (executor != "local" or workers != 1):
        raise _Failed("stack: trains here, in one process: not with --executor ray or --workers")
    if out.exists() and not out.is_dir():
        raise _Failed(f"out: {out} is a file; the bench writes a directory of runs there")
    try:
        runs = plan_bench(
            profile,
            tasks=_csv_list(tasks, str, "tasks") if tasks else (),
            lengths=_csv_list(lengths, int, "lengths") if lengths else (),
            methods=_csv_list(methods, str, "methods") if methods else (),
            seeds=_csv_list(seeds, int, "seeds") if seeds else (),
            steps=steps,
            hidden=hidden,
        )
        if stack:
            out.mkdir(parents=True, exist_ok=True)
            train_planned_stacked(runs, out, progress=progress, only_stackable=True)
        rows = run_bench(
            runs,
            out,
            executor=executor,
            workers=workers,
            address=address,
            progress=progress,
            report=report,
        )
    except (ConfigError, FileExistsError, RunDirectoryBusy, RunDirectoryError) as err:
        raise _Failed(str(err)) from None
    except (NonFiniteError, RunStopped) as err:
        raise _RunFailed(str(err)) from None
    except ImportError as err:
        raise _Failed(str(err)) from None
    _out.print(leaderboard(rows))
    _out.print(f"results: {out / 'results.csv'}")
    if report:
        _out.print(f"report: {out / 'report.html'}")


# --- bptt report -----------------------------------------------------------------------------


@app.command("report")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--open", "open_it", is_flag=True, help="Open the report in a web browser.")
def report_command(path: Path, open_it: bool) -> None:
    """Write PATH/report.html for a run directory or a bench directory."""
    try:
        written = write_report(path)
    except ConfigError as err:
        raise _Failed(str(err)) from None
    except OSError as err:
        raise _RunFailed(
            f"report: could not write {path / 'report.html'}: {err.strerror}"
        ) from None
    _out.print(f"report: {written}")
    if open_it:
        import webbrowser

        if not webbrowser.open(written.resolve().as_uri()):
            _err.print("warning: no web browser could be opened here", highlight=False)


# --- bptt diagnose ---------------------------------------------------------------------------


@app.command("diagnose")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--probe", default=32, show_default=True, type=int, help="Probe sequences (from the test set)."
)
@click.option(
    "--dependency-length",
    type=int,
    help="How far back the task depends (default: the task's own).",
)
@click.option(
    "--at-init",
    is_flag=True,
    help="Probe the model the run started from (its seed's initialisation), not the final one.",
)
def diagnose_command(
    run_dir: Path, as_json: bool, probe: int, dependency_length: int | None, at_init: bool
) -> None:
    """Diagnose a finished run: why it did (not) learn, with the numbers and what to do."""
    try:
        what = "the initial model of " if at_init else ""
        with _err.status(f"diagnosing {what}{run_dir} on {probe} probe sequences"):
            found = diagnose_run(
                run_dir, probe=probe, dependency_length=dependency_length, at_init=at_init
            )
    except ConfigError as err:
        raise _Failed(str(err)) from None
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    _print_verdict(
        found["verdict"], found["reasons"], found.get("diverged"), found.get("history", [])
    )
    table = Table(title=f"diagnosis of {what}{run_dir}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    numbers = {k: v for k, v in found.get("evidence", {}).items() if not k.startswith("probe/")}
    numbers.update({k: found[k] for k in NUMBER_KEYS if k in found})
    numbers.update({k: v for k, v in found.items() if k.startswith("saturation/")})
    for key, value in numbers.items():
        table.add_row(key, _number_text(value))
    _out.print(table)
    _print_remedies(found["remedies"])


_COLOURS = {"exploding": "red", "healthy": "green"}


def _print_verdict(
    verdict: str, reasons: list[str], diverged: bool | None, history: list[str]
) -> None:
    colour = _COLOURS.get(verdict, "yellow")
    note = " (diverged)" if diverged else ""
    _out.print(f"verdict: [bold {colour}]{escape(verdict)}[/]{note}", soft_wrap=True)
    for reason in reasons:
        _out.print(f"  because {escape(reason)}", soft_wrap=True)
    for event in history:
        _out.print(f"  on the way, {escape(event)}", soft_wrap=True)


def _print_remedies(remedies: list[Any]) -> None:
    """Each remedy's reason, and for a run's its ``bptt train`` command; a model
    without a run gets the library's (what to change and why, and in which layer)."""
    for remedy in remedies:
        why = remedy.get("why", "") if isinstance(remedy, dict) else str(remedy)
        layer = remedy.get("layer") if isinstance(remedy, dict) else None
        text = why if layer is None else f"{layer}: {why}"
        _out.print(f"  remedy: {escape(text)}", highlight=False, soft_wrap=True)
        command = remedy.get("command") if isinstance(remedy, dict) else None
        if command is not None:
            _out.print(f"    {escape(command)}", highlight=False, soft_wrap=True)


# --- bptt attractor --------------------------------------------------------------------------


@app.command("attractor")
@click.option(
    "--out",
    default="attractor.png",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Image file to write (.png, .pdf, .svg, ...), or a directory.",
)
@click.option("--steps", default=30, show_default=True, type=int, help="Steps run from each start.")
@click.option(
    "--resolution", default=101, show_default=True, type=int, help="Grid points per side."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing image.")
def attractor_command(out: Path, steps: int, resolution: int, overwrite: bool) -> None:
    """Draw the two-basin picture: the gradient vanishes inside a basin, explodes at its edge."""
    path = out / "attractor.png" if out.is_dir() else out
    if path.exists() and not path.is_file():
        raise _Failed(f"out: {out} is neither a directory nor a regular file")
    if not path.suffix:
        path = path.with_suffix(".png")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise _Failed(f"out: {path} exists; give --overwrite to replace it, or another --out")
    try:
        if path.suffix.lstrip(".").lower() not in image_formats():
            known = ", ".join(sorted(image_formats()))
            raise ValueError(f"out: {path.suffix} is not an image format; use one of {known}")
        with _err.status(f"{resolution}x{resolution} starts, {steps} steps each"):
            result = basin_gradient_map(two_basin_cell(), resolution=resolution, steps=steps)
            path = plot_basin_gradients(result, path)
    except ValueError as err:
        raise _Failed(str(err)) from None
    except OSError as err:
        raise _Failed(f"out: cannot write {path}: {err.strerror or err}") from None
    norms = result["norms"]
    _out.print(
        f"||dh_T/dh_0|| over {resolution}x{resolution} starts, T={steps}: "
        f"median {norms.median().item():.3g}, max {norms.max().item():.3g} (at the boundary)"
    )
    _out.print(f"figure: {path}")


def main() -> None:
    """Entry point of the ``bptt`` console script."""
    from bptt.run import keep_freed_memory

    keep_freed_memory()  # the application owns its process: reuse freed memory
    app(prog_name="bptt")
