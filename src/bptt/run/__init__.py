"""The application on top of the library: configured runs that leave a run directory.

* :class:`TrainConfig` (pydantic; every error a :class:`ConfigError` naming its
  field; its clip policy, optimizer and schedule one model per kind: :class:`ClipNorm`,
  :class:`OptimizerAdam`, :class:`ScheduleCosine`...), :data:`RECIPES`
  (``--method``), :func:`train`, :func:`resume`, :func:`load_run`: one training run,
  its checkpoints, its directory.
* :class:`RunDirectory`, :class:`Checkpoints`: what a run leaves, written so that a
  crash, a full disk or a second writer loses nothing; :class:`RunSummary`, the typed
  record of its ``summary.json`` (validated when written and read).
* :class:`ESNConfig`, :func:`run_esn`: ``bptt esn``.
* :func:`plan_bench`, :func:`run_bench`, :func:`leaderboard`: ``bptt bench``
  (profiles of runs, executed here or on Ray, ``results.csv``, the report);
  :data:`LITERATURE_ROWS`: the published long-range results and their recipes;
  :func:`parse_seeds`, :func:`plan_seeds`: ``bptt train --seeds`` (one configuration
  once per seed, through the bench's executors); :func:`train_stacked`: runs of one
  model on one task (seeds, learning rates, clipping...) trained as one stacked model
  (``--seeds ... --stack``, ``bench --stack``).

Nothing in the library (cells, engines, clipping, diagnostics, tasks, reservoirs)
imports this package; the command line (:mod:`bptt.cli`) is built on it.

It is built in parts, each a package that states its public API and imports another
only through that API: :mod:`bptt.run.training` (config, recipes, building a run, the
loop, run directory, checkpoints, stacked runs), which every other part builds on;
:mod:`bptt.run.esn` (the ESN runner); :mod:`bptt.run.diagnosis` (a run directory's
verdict); :mod:`bptt.run.bench` (plans, executors, results, the literature's rows,
seeds); :mod:`bptt.run.report` (the pages). Two modules sit outside the parts:
``_figures`` below them (drawn by training's TensorBoard log and by the report) and
``_bench`` above them (:func:`run_bench`: the bench's runs, then the report's page).
"""

from bptt.run._bench import run_bench
from bptt.run.bench import (
    CLIP_DEMO,
    EXECUTORS,
    LITERATURE_ROWS,
    PROFILES,
    RESULT_FIELDS,
    LiteratureRow,
    PlannedRun,
    leaderboard,
    parse_seeds,
    plan_bench,
    plan_seeds,
    read_results,
    train_planned_stacked,
)
from bptt.run.diagnosis import diagnose_run
from bptt.run.esn import ESN_TASK_DEFAULTS, ESN_TASKS, ESNConfig, run_esn
from bptt.run.report import write_bench_report, write_report, write_run_report
from bptt.run.training import (
    METRIC_FIELDS,
    RECIPES,
    RUN_FILES,
    SHARED_FIELDS,
    CheckpointError,
    Checkpoints,
    ClipAdaptive,
    ClipCalibrate,
    ClipNone,
    ClipNorm,
    ClipPercentile,
    ClipSettings,
    ClipValue,
    ClipZScore,
    ConfigError,
    ConfigModel,
    NonFiniteError,
    OptimizerAdam,
    OptimizerHF,
    OptimizerRMSprop,
    OptimizerSettings,
    OptimizerSGD,
    Recipe,
    RunDirectory,
    RunDirectoryBusy,
    RunDirectoryError,
    RunStopped,
    RunSummary,
    ScheduleConstant,
    ScheduleCosine,
    ScheduleSettings,
    TrainConfig,
    TrainResult,
    build_model,
    field_choices,
    initial_model,
    json_safe,
    keep_freed_memory,
    load_checkpoint,
    load_run,
    load_toml,
    make_clip_policy,
    remedies_for,
    resume,
    stack_refusal,
    step_taps,
    test_set,
    train,
    train_command,
    train_stacked,
)

__all__ = [
    "CLIP_DEMO",
    "ESN_TASKS",
    "ESN_TASK_DEFAULTS",
    "EXECUTORS",
    "LITERATURE_ROWS",
    "METRIC_FIELDS",
    "PROFILES",
    "RECIPES",
    "RESULT_FIELDS",
    "RUN_FILES",
    "SHARED_FIELDS",
    "CheckpointError",
    "Checkpoints",
    "ClipAdaptive",
    "ClipCalibrate",
    "ClipNone",
    "ClipNorm",
    "ClipPercentile",
    "ClipSettings",
    "ClipValue",
    "ClipZScore",
    "ConfigError",
    "ConfigModel",
    "ESNConfig",
    "LiteratureRow",
    "NonFiniteError",
    "OptimizerAdam",
    "OptimizerHF",
    "OptimizerRMSprop",
    "OptimizerSGD",
    "OptimizerSettings",
    "PlannedRun",
    "Recipe",
    "RunDirectory",
    "RunDirectoryBusy",
    "RunDirectoryError",
    "RunStopped",
    "RunSummary",
    "ScheduleConstant",
    "ScheduleCosine",
    "ScheduleSettings",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "diagnose_run",
    "field_choices",
    "initial_model",
    "json_safe",
    "keep_freed_memory",
    "leaderboard",
    "load_checkpoint",
    "load_run",
    "load_toml",
    "make_clip_policy",
    "parse_seeds",
    "plan_bench",
    "plan_seeds",
    "read_results",
    "remedies_for",
    "resume",
    "run_bench",
    "run_esn",
    "stack_refusal",
    "step_taps",
    "test_set",
    "train",
    "train_command",
    "train_planned_stacked",
    "train_stacked",
    "write_bench_report",
    "write_report",
    "write_run_report",
]
