"""What ``bptt bench`` runs: the profiles, as lists of planned runs.

* ``quick`` (the default, the README's main job; about five minutes of training on
  two cores) shows the lectures' story on real runs, each one diagnosed:

  - ``four-ways``: the plain tanh RNN, the LSTM, Hessian-free, the echo state network
    and momentum with a reservoir's initialisation on temporal order at T = 100
    (:data:`FOUR_WAYS_QUICK`), with the gradient by distance of each final model;
  - ``methods``: each remedy on the task it is known for, beside the plain tanh RNN
    (:data:`QUICK_METHODS`): on adding at T = 30 the LSTM and the IRNN learn the
    dependency, on copy at T = 10 the orthogonal RNN does, and the tanh RNN learns
    neither; the gradient-by-distance curve of each final model says why (vanishing
    for the tanh RNN, alive for the others);
  - ``clipping``: an LSTM under Nesterov SGD at learning rate 0.5 diverges within the
    first steps unclipped, and solves the adding task with its global norm clipped at
    1, with AutoClip, or with the hidden-state gradient clipped at every time step;
  - ``truncation``: a GRU trained by truncated BPTT to echo the symbol it read d = 8
    steps ago learns it with k2 = 16 and stays at chance with k2 = 4 < d;
  - ``reservoir``: an echo state network fits Mackey-Glass in seconds.

* ``full``: the long-range table of :data:`bptt.run.bench._literature.LITERATURE_ROWS`
  (lengths to 2,000, seeds 0, 1, 2), each run until solved or out of steps: hours
  on two cores (a copy step at T=1000 takes about 0.7 s).

* ``matrix``: the product of the given tasks, lengths, methods and seeds.

Every run is the run directory of ``bptt train`` or ``bptt esn``, so it can be
reopened, diagnosed, resumed and reported.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bptt.run.bench._literature import LITERATURE_ROWS
from bptt.run.esn import ESNConfig
from bptt.run.training import RECIPES, ConfigError, TrainConfig

__all__ = ["CLIP_DEMO", "PROFILES", "PlannedRun", "plan_bench", "refuse_other_configs"]

# what may differ between a planned training and the run found in its directory: where
# it is, its threads (a begun run keeps its own) and how long it may train
_NOT_COMPARED = ("out", "threads", "time_limit_s")

PROFILES = ("quick", "full", "matrix")

# The four ways group: the lectures' four ways past vanishing gradients side by side on
# one task where the plain tanh RNN fails, each until solved or out of its budget, with
# the gradient-by-distance of each final model. Hessian-free at the quick profile's
# size (hidden 32, gradient on 500 sequences, curvature on 100, at most 50 CG steps),
# not the recipe's (hidden 100, 10,000 and 1,000 sequences, 300 CG steps: minutes a
# step here). Measured in the quick bench (seed 0, 2 threads, 3 min 46 s for the whole
# profile): the tanh RNN stays at the baseline after 1,500 steps (27% accuracy,
# saturated); the chrono LSTM solves it at step 700 (35 s); Hessian-free at step 15
# (22 s); momentum from a reservoir stays at the baseline (24%, vanishing); the leaky
# ESN's readout makes no error (3 s).
FOUR_WAYS_TASK = {"task": "order", "length": 100}
FOUR_WAYS_QUICK: tuple[tuple[str, dict[str, Any]], ...] = (
    ("rnn", {"method": "rnn", "steps": 1500, "eval_every": 100}),
    ("lstm-chrono-adam", {"method": "lstm-chrono-adam", "steps": 1500, "eval_every": 100}),
    (
        "hf, hidden 32, batch 500",
        {"method": "hf", "hidden": 32, "batch_size": 500, "hf_curvature_fraction": 0.2}
        | {"hf_max_cg": 50, "steps": 40, "eval_every": 5},
    ),
    ("esn-momentum", {"method": "esn-momentum", "steps": 1500, "eval_every": 100}),
)

# The methods group: each remedy on the task it is known for, beside the plain tanh
# RNN on the same task, until solved or out of steps. Measured (seed 0, 2 cores): on
# adding T=30 the tanh RNN stays at 1.07 of the baseline after 2,000 steps (saturated),
# the LSTM solves it at step 800, the IRNN at step 2,100 with Adam lr 1e-3 (at its
# recipe's 1e-4 it was at 0.88 of the baseline after 2,000 steps); on copy T=10 the
# tanh RNN recalls 12% of the symbols (chance 12.5%), the orthogonal RNN 100% after
# 2,500 steps (cross-entropy 0.023 of the baseline, one thread, with the corrected
# Henaff initialisation; 97.5% and 0.11 before it; the LSTM was at 0.93). The
# orthogonal RNN on adding T=30 was at 0.58 of the baseline after 2,000 steps.
QUICK_STEPS = 2500
QUICK_METHODS: tuple[tuple[str, int, str, dict[str, Any]], ...] = (
    ("adding", 30, "rnn", {}),
    ("adding", 30, "lstm", {}),
    ("adding", 30, "irnn", {"lr": 1e-3}),
    ("copy", 10, "rnn", {}),
    ("copy", 10, "orthogonal", {}),
)

# Diverges without clipping on seed 0 (NaN by step 15), learns with it (measured).
CLIP_DEMO = {
    "task": "adding",
    "length": 10,
    "cell": "lstm",
    "lstm_init": "torch",  # as measured (the chrono default came after)
    "optimizer": "sgd",
    "lr": 0.5,
    "momentum": 0.9,
    "steps": 1000,
}
# The group: no rollback to a checkpoint at a lower learning rate (the bench's runs
# checkpoint, and a rollback rescues the unclipped run on its own), so the clipping alone
# is compared; each run until solved, in at most 2,000 steps. Measured (seeds 0, 1, 2;
# one thread): unclipped, 985-986 of 1,000 steps non-finite from about step 15; the norm
# clipped at 1 solves it at step 700, 600, 500; AutoClip at 700, 600, 600; dL/dh_t
# clipped per step at 0.02 at 600, 1400, 600 (at 0.01: 1100, 1100, 1500; at 0.1 and 1
# it did not stop the divergence, 983 of 1,000 steps non-finite: at learning rate 0.5
# the parameter gradient summed over the steps still overshoots unless each step's
# share is small). Run to 1,000 steps without stopping, the clipped runs solved it and
# drifted off again (SGD at 0.5 keeps the test loss moving), ending "not solved".
CLIP_GROUP = {"nonfinite_patience": 0, "stop_when_solved": True, "steps": 2000}
CLIP_VARIANTS = (
    ("no clipping", {"clip": "none"}),
    ("norm clipped at 1", {"clip": "norm", "clip_norm": 1.0}),
    ("AutoClip", {"clip": "percentile"}),
    ("dL/dh clipped per step at 0.02", {"clip": "none", "clip_step_norm": 0.02}),
)

# Delayed echo over d steps, learnt by truncated BPTT (benchmarks/tbptt_echo.py).
# Measured (seed 0, 800 updates): at d = 8, k2 = 4 stays at the baseline (test
# cross-entropy 1.393 against ln 4 = 1.386), k2 = 16 reaches 0.34 (0.25 of it); at d = 16,
# k2 = 8 stayed at 1.001 of the baseline and k2 = 32 reached 0.79 of it.
ECHO_DELAY = 8
ECHO = {"task": "echo", "length": ECHO_DELAY, "cell": "gru", "hidden": 32, "lr": 2e-2}
ECHO.update({"batch_size": 32, "steps": 800, "tbptt_k1": 4})
ECHO_K2 = (4, 16)

# Settings every trained run of a bench shares: checkpoints to resume from and roll
# back to after ROLLBACK_PATIENCE non-finite steps in a row (the settings its results
# were measured with), and diagnoses during training for the report's heatmap.
CHECKPOINT_EVERY = 100
ROLLBACK_PATIENCE = 5
DIAGNOSES_PER_RUN = 10


@dataclass(frozen=True)
class PlannedRun:
    """One run of a bench.

    Attributes:
        group: ``four-ways``, ``methods``, ``clipping``, ``truncation``,
            ``reservoir`` or ``literature``: the question the run answers.
        method: what the results' method column shows (a recipe's name, or the cell
            and what is special about the run).
        kind: ``train`` (``bptt train``) or ``esn`` (``bptt esn``).
        fields: the run's config fields (its ``out`` is set by the bench).
        published: the published result for this task and length, if any.
    """

    group: str
    method: str
    kind: str
    fields: dict[str, Any] = field(hash=False)
    published: str | None = None

    @property
    def task(self) -> str:
        return str(self.fields["task"])

    @property
    def length(self) -> int | None:
        return self.fields.get("length")

    @property
    def seed(self) -> int:
        return int(self.fields.get("seed", 0))

    @property
    def name(self) -> str:
        """The run directory's name, unique within a bench."""
        slug = re.sub(r"[^a-z0-9.]+", "-", self.method.lower()).strip("-")
        length = "" if self.length is None else f"-T{self.length}"
        return f"{self.group}-{self.task}{length}-{slug}-s{self.seed}"

    def config(self, out: str | None, threads: int) -> TrainConfig | ESNConfig:
        """The validated config of this run, writing to ``out`` with ``threads``."""
        if self.kind == "esn":
            return ESNConfig.from_dict({**self.fields, "out": out})
        return TrainConfig.from_dict({**self.fields, "out": out, "threads": threads})


def _trained(group: str, method: str, fields: dict[str, Any], published: str | None = None):
    steps = int(fields.get("steps", 1000))
    every = {"checkpoint_every": CHECKPOINT_EVERY, "nonfinite_patience": ROLLBACK_PATIENCE}
    every["diagnose_every"] = max(1, steps // DIAGNOSES_PER_RUN)
    return PlannedRun(group, method, "train", {**every, **fields}, published)


def _four_ways(seeds: Sequence[int], steps: int | None) -> list[PlannedRun]:
    runs = []
    for seed in seeds:
        for label, settings in FOUR_WAYS_QUICK:
            fields = {**FOUR_WAYS_TASK, **settings, "seed": seed, "stop_when_solved": True}
            if steps:
                fields["steps"] = steps
            runs.append(_trained("four-ways", label, fields))
        esn = {**FOUR_WAYS_TASK, "seed": seed}
        runs.append(PlannedRun("four-ways", "esn, leaky reservoir", "esn", esn))
    return runs


def _quick(seeds: Sequence[int], steps: int | None) -> list[PlannedRun]:
    runs = _four_ways(seeds, steps)
    for (task, length, method, settings), seed in itertools.product(QUICK_METHODS, seeds):
        fields = {"task": task, "length": length, "method": method, "seed": seed, **settings}
        fields.update(steps=steps or QUICK_STEPS, stop_when_solved=True, eval_every=50)
        label = ", ".join([method, *(f"{k} {v:g}" for k, v in settings.items())])
        runs.append(_trained("methods", label, fields))
    for seed in seeds:
        for label, variant in CLIP_VARIANTS:
            fields = {**CLIP_DEMO, **CLIP_GROUP, **variant, "seed": seed}
            if steps:
                fields["steps"] = steps
            runs.append(_trained("clipping", f"lstm, {label}", fields))
        for k2 in ECHO_K2:
            fields = {**ECHO, "tbptt_k2": k2, "seed": seed}
            if steps:
                fields["steps"] = steps
            runs.append(_trained("truncation", f"gru, tbptt k1=4 k2={k2}", fields))
        esn = {"task": "mackey-glass", "seed": seed}
        runs.append(PlannedRun("reservoir", "esn", "esn", esn))
    return runs


def _full(seeds: Sequence[int], steps: int | None) -> list[PlannedRun]:
    runs = []
    for row, seed in itertools.product(LITERATURE_ROWS, seeds):
        if row.method == "esn":  # a reservoir's readout: `bptt esn`, no training
            esn = {"task": row.task, "length": row.length, "seed": seed, **row.settings}
            runs.append(PlannedRun("literature", "esn", "esn", esn, row.anchor))
            continue
        fields = {"task": row.task, "length": row.length, "method": row.method, "seed": seed}
        fields.update(stop_when_solved=True, eval_every=100, test_size=1000)
        fields.update(row.settings)  # a row chosen on validation trains to its end
        if steps:
            fields["steps"] = steps
        runs.append(_trained("literature", row.method, fields, row.anchor))
    return runs


def _matrix(
    tasks: Sequence[str],
    lengths: Sequence[int],
    methods: Sequence[str],
    seeds: Sequence[int],
    steps: int | None,
) -> list[PlannedRun]:
    if not (tasks and lengths and methods):
        raise ConfigError("profile", "matrix needs --tasks, --lengths and --methods")
    runs = []
    for task, length, method, seed in itertools.product(tasks, lengths, methods, seeds):
        fields = {"task": task, "length": length, "method": method, "seed": seed}
        fields.update(steps=steps or QUICK_STEPS, stop_when_solved=True, eval_every=50)
        runs.append(_trained("matrix", method, fields))
    return runs


def plan_bench(
    profile: str = "quick",
    *,
    tasks: Sequence[str] = (),
    lengths: Sequence[int] = (),
    methods: Sequence[str] = (),
    seeds: Sequence[int] = (),
    steps: int | None = None,
    hidden: int | None = None,
) -> list[PlannedRun]:
    """The runs of a bench, validated before anything runs.

    Args:
        profile: ``quick``, ``full`` or ``matrix`` (see the module's docstring).
        tasks, lengths, methods: for ``quick`` and ``full``, keep only the runs whose
            task, length or method (the name before its first comma) is listed (empty:
            all); for ``matrix``, the axes of the product.
        seeds: the seeds of every run (empty: the profile's, 0 for ``quick`` and
            ``matrix``, 0, 1, 2 for ``full``).
        steps: optimizer steps of every trained run (None: each run's own).
        hidden: hidden units of every trained run (None: each run's own).

    Raises:
        ConfigError: an unknown profile or method, a bad value, an empty selection, or
            a run listed twice.
    """
    _check_plan_arguments(profile, seeds, lengths, steps, methods)
    if profile == "matrix":
        runs = _matrix(tasks, lengths, methods, seeds or (0,), steps)
    else:
        runs = (_quick if profile == "quick" else _full)(seeds or _SEEDS[profile], steps)
        runs = [
            run
            for run in runs
            if (not tasks or run.task in tasks)
            and (not lengths or run.length in lengths)
            and (not methods or run.method.split(",")[0] in methods)
        ]
    if hidden is not None:
        runs = [
            PlannedRun(r.group, r.method, r.kind, {**r.fields, "hidden": hidden}, r.published)
            if r.kind == "train"
            else r
            for r in runs
        ]
    _check_planned(runs)
    return runs


def _check_plan_arguments(
    profile: str,
    seeds: Sequence[int],
    lengths: Sequence[int],
    steps: int | None,
    methods: Sequence[str],
) -> None:
    """Refuse an unknown profile, a bad seed, length or step count, and (for a matrix,
    whose methods are recipes) an unknown method."""
    if profile not in PROFILES:
        raise ConfigError("profile", f"must be one of {', '.join(PROFILES)}; got {profile!r}")
    for name, values in (("seeds", seeds), ("lengths", lengths)):
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(name, f"must be integers >= 0; got {value!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ConfigError("steps", f"must be an integer >= 1; got {steps!r}")
    unknown = [m for m in methods if m not in RECIPES]
    if unknown and profile == "matrix":
        raise ConfigError("methods", f"unknown {unknown}; known: {', '.join(RECIPES)}")


def _check_planned(runs: list[PlannedRun]) -> None:
    """Refuse an empty selection, a run listed twice, and any run whose configuration
    is invalid: every error before anything runs."""
    if not runs:
        raise ConfigError("bench", "no run of the profile matches the given tasks/lengths/methods")
    names = set()
    for run in runs:
        if run.name in names:
            raise ConfigError("bench", f"the run {run.name} is listed twice")
        names.add(run.name)
        run.config(None, 0)


_SEEDS = {"quick": (0,), "full": (0, 1, 2)}


def refuse_other_configs(runs: Sequence[PlannedRun], out: str | Path) -> None:
    """Refuse a bench directory whose run directories hold trainings of another
    configuration than planned (a bench rerun with other flags into the same ``out``
    would otherwise report the old runs as the new ones).

    Raises:
        ConfigError: (field ``out``) a run directory holds another configuration's run,
            or an unreadable one; the message names it and the fields that differ.
    """
    for run in runs:
        where = Path(out) / run.name
        if run.kind != "train" or not (where / "config.toml").is_file():
            continue
        try:
            found = TrainConfig.saved_in(where)
        except ConfigError as err:
            raise ConfigError("out", f"{where} holds an unreadable run: {err}") from None
        planned = cast(TrainConfig, run.config(str(where), found.threads))
        changed = planned.differing_fields(found, ignore=_NOT_COMPARED)
        if changed:
            message = (
                f"{where} holds a run of another configuration (differs in "
                f"{', '.join(changed)}); use another --out"
            )
            raise ConfigError("out", message)
