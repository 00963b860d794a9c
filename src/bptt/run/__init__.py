"""The application on top of the library: configured runs that leave a run directory.

* :class:`TrainConfig` (pydantic; every error a :class:`ConfigError` naming its
  field), :data:`RECIPES` (``--method``), :func:`train`, :func:`resume`,
  :func:`load_run`: one training run, its checkpoints, its directory.
* :class:`RunDirectory`, :class:`Checkpoints`: what a run leaves, written so that a
  crash, a full disk or a second writer loses nothing.
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
"""

from bptt.run._bench import run_bench
from bptt.run._build import (
    build_model,
    initial_model,
    json_safe,
    make_clip_policy,
    step_taps,
    test_set,
)
from bptt.run._checkpoint import CheckpointError, Checkpoints, load_checkpoint
from bptt.run._config import TrainConfig
from bptt.run._diagnosis import diagnose_run
from bptt.run._esn import ESN_TASK_DEFAULTS, ESN_TASKS, ESNConfig, run_esn
from bptt.run._executors import EXECUTORS, train_planned_stacked
from bptt.run._fields import ConfigError, ConfigModel, field_choices, load_toml
from bptt.run._literature import LITERATURE_ROWS, LiteratureRow
from bptt.run._loop import NonFiniteError, RunStopped
from bptt.run._memory import keep_freed_memory
from bptt.run._plan import CLIP_DEMO, PROFILES, PlannedRun, plan_bench
from bptt.run._recipes import RECIPES, Recipe
from bptt.run._remedies import remedies_for, train_command
from bptt.run._report import write_bench_report, write_report, write_run_report
from bptt.run._results import RESULT_FIELDS, leaderboard, read_results
from bptt.run._rundir import (
    METRIC_FIELDS,
    RUN_FILES,
    RunDirectory,
    RunDirectoryBusy,
    RunDirectoryError,
)
from bptt.run._seeds import parse_seeds, plan_seeds
from bptt.run._stacked import SHARED_FIELDS, stack_refusal, train_stacked
from bptt.run._train import TrainResult, load_run, resume, train

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
    "ConfigError",
    "ConfigModel",
    "ESNConfig",
    "LiteratureRow",
    "NonFiniteError",
    "PlannedRun",
    "Recipe",
    "RunDirectory",
    "RunDirectoryBusy",
    "RunDirectoryError",
    "RunStopped",
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
