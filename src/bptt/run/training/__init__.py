"""Training: one configured run, from its config to the run directory it leaves.

* The config: :class:`TrainConfig` (``_config``), a :class:`ConfigModel` whose errors
  are :class:`ConfigError` naming the field (``_fields``: also the field types
  :data:`Int`, :data:`Float`, :data:`Text` other configs declare with, and
  :func:`load_toml`); :data:`RECIPES` for ``--method`` (``_recipes``). Its clip
  policy, optimizer and schedule are nested models, one per kind, each building its
  object, with the flat flags converted to them (``_settings``): :class:`ClipNorm`,
  :class:`OptimizerSGD`, :class:`ScheduleCosine`... and their unions
  :data:`ClipSettings`, :data:`OptimizerSettings`, :data:`ScheduleSettings`
  (``TrainConfig(clip=ClipNorm(max_norm=1.0))`` equals ``clip="norm", clip_norm=1.0``).
* :func:`make_progress`, the progress display; what a run needs around it in the
  process (its directory opened, threads, the progress bar: ``_session``).
* Building and running it: the model, optimizer, clip policy and test set (``_build``),
  the batches (``_batches``), the step rule (``_steps``), the loop (``_loop``),
  :func:`train`, :func:`resume`, :func:`load_run` (``_train``); :func:`train_stacked`,
  K runs of one model trained as one stacked model (``_stacked``).
* What a run leaves: :class:`RunDirectory` and :func:`read_summary` (``_rundir``),
  the typed record of its ``summary.json``, :class:`RunSummary` (``_summary``),
  :class:`Checkpoints` (``_checkpoint``), written with the atomic writes and bounded
  reads of ``_io`` (:func:`atomic_write_text`, :func:`read_bounded_text`,
  :data:`RECORD_BYTES`).
* What a run asks of the machine: its threads (``_cores``: :func:`run_threads`,
  :func:`free_cores`), its memory, estimated before anything is allocated
  (``_footprint``: :func:`refuse_oversized`, :func:`esn_memory`), glibc's freed memory
  kept (``_memory``).
* :func:`remedies_for`, :func:`train_command` (``_remedies``): the ``bptt train``
  commands that fit a verdict. The loop writes them into every summary; the diagnosis
  of a run directory reads them from here.

Every other part of :mod:`bptt.run` (the ESN runner, the bench, the report, the
diagnosis) builds on this one; it imports none of them. Its one outside import is
:mod:`bptt.run._figures`, the figures it shares with the report (the TensorBoard figure
of the gradient by distance).
"""

from bptt.run.training._build import (
    build_model,
    evaluation_mode,
    initial_model,
    json_safe,
    make_clip_policy,
    seeds,
    step_taps,
    test_set,
)
from bptt.run.training._checkpoint import CheckpointError, Checkpoints, load_checkpoint
from bptt.run.training._config import TrainConfig
from bptt.run.training._cores import free_cores, run_threads
from bptt.run.training._fields import (
    ConfigError,
    ConfigModel,
    Float,
    Int,
    Text,
    field_choices,
    load_toml,
)
from bptt.run.training._footprint import esn_memory, refuse_oversized
from bptt.run.training._io import RECORD_BYTES, atomic_write_text, read_bounded_text
from bptt.run.training._loop import NonFiniteError, RunStopped
from bptt.run.training._memory import keep_freed_memory
from bptt.run.training._recipes import RECIPES, Recipe
from bptt.run.training._remedies import remedies_for, train_command
from bptt.run.training._rundir import (
    METRIC_FIELDS,
    RUN_FILES,
    RunDirectory,
    RunDirectoryBusy,
    RunDirectoryError,
    read_summary,
)
from bptt.run.training._session import make_progress
from bptt.run.training._settings import (
    ClipAdaptive,
    ClipCalibrate,
    ClipNone,
    ClipNorm,
    ClipPercentile,
    ClipSettings,
    ClipValue,
    ClipZScore,
    OptimizerAdam,
    OptimizerHF,
    OptimizerRMSprop,
    OptimizerSettings,
    OptimizerSGD,
    ScheduleConstant,
    ScheduleCosine,
    ScheduleSettings,
)
from bptt.run.training._stacked import (
    SHARED_FIELDS,
    shared_settings,
    stack_refusal,
    train_stacked,
)
from bptt.run.training._summary import RemedyCommand, RunDiagnosis, RunSummary
from bptt.run.training._train import (
    TrainResult,
    load_run,
    load_run_config,
    resume,
    train,
)

__all__ = [
    "METRIC_FIELDS",
    "RECIPES",
    "RECORD_BYTES",
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
    "Float",
    "Int",
    "NonFiniteError",
    "OptimizerAdam",
    "OptimizerHF",
    "OptimizerRMSprop",
    "OptimizerSGD",
    "OptimizerSettings",
    "Recipe",
    "RemedyCommand",
    "RunDiagnosis",
    "RunDirectory",
    "RunDirectoryBusy",
    "RunDirectoryError",
    "RunStopped",
    "RunSummary",
    "ScheduleConstant",
    "ScheduleCosine",
    "ScheduleSettings",
    "Text",
    "TrainConfig",
    "TrainResult",
    "atomic_write_text",
    "build_model",
    "esn_memory",
    "evaluation_mode",
    "field_choices",
    "free_cores",
    "initial_model",
    "json_safe",
    "keep_freed_memory",
    "load_checkpoint",
    "load_run",
    "load_run_config",
    "load_toml",
    "make_clip_policy",
    "make_progress",
    "read_bounded_text",
    "read_summary",
    "refuse_oversized",
    "remedies_for",
    "resume",
    "run_threads",
    "seeds",
    "shared_settings",
    "stack_refusal",
    "step_taps",
    "test_set",
    "train",
    "train_command",
    "train_stacked",
]
