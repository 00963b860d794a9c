"""``bptt train --seeds 0-7``: one configuration trained once per seed.

Each seed is a run directory of its own under the given ``out`` (named as the bench
names its runs), executed by the bench's executors (:mod:`bptt.run.bench._executors`): one
run at a time with every core, or ``workers`` runs at once sharing the cores so that
threads never exceed them. A finished seed is skipped and an interrupted one resumed,
so the same command, run again, completes only what is missing; a directory that
holds seed runs of another configuration is refused rather than mixed into the table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bptt.run.bench._plan import (
    CHECKPOINT_EVERY,
    ROLLBACK_PATIENCE,
    PlannedRun,
    refuse_other_configs,
)
from bptt.run.training import ConfigError, TrainConfig

__all__ = ["MAX_SEEDS", "parse_seeds", "plan_seeds"]

MAX_SEEDS = 1000
_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_seeds(text: str) -> list[int]:
    """``"0-7"``, ``"0,3,5"`` or ``"0-3,8"`` as a list of distinct seeds, in order.

    Raises:
        ConfigError: (field ``seeds``) not such a list, a range running backwards, a
            seed given twice, or more than :data:`MAX_SEEDS` seeds.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("seeds", f"expected seeds such as 0-7 or 0,3,5; got {text!r}")
    seeds: list[int] = []
    for part in text.split(","):
        match = _PART.match(part)
        if match is None:
            raise ConfigError("seeds", f"expected seeds such as 0-7 or 0,3,5; got {text!r}")
        first = int(match.group(1))
        last = first if match.group(2) is None else int(match.group(2))
        if last < first:
            raise ConfigError("seeds", f"the range {part.strip()} runs backwards")
        if last - first + 1 + len(seeds) > MAX_SEEDS:
            raise ConfigError("seeds", f"at most {MAX_SEEDS} seeds; got more in {text!r}")
        seeds.extend(range(first, last + 1))
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ConfigError("seeds", f"seed {repeated[0]} is given twice in {text!r}")
    return seeds


def plan_seeds(values: dict[str, Any], seeds: Sequence[int]) -> list[PlannedRun]:
    """One planned run per seed of the configuration ``values`` (config fields, as
    for :class:`TrainConfig`; its ``out`` is the directory of the seed runs).

    Every seed's config is validated here; the runs checkpoint every
    :data:`~bptt.run.bench._plan.CHECKPOINT_EVERY` steps and roll back after
    :data:`~bptt.run.bench._plan.ROLLBACK_PATIENCE` non-finite steps in a row, as a bench's
    runs do, unless ``checkpoint_every`` or ``nonfinite_patience`` is given. A seed
    directory already under ``out`` must hold a run of the same configuration (it is
    then skipped if finished, resumed if not), and ``out`` may hold no seed runs this
    call does not plan (the table and report would drop them).

    Raises:
        ConfigError: a field's value, no ``out``, no seeds, a ``seed`` given beside
            the seeds, or an ``out`` holding seed runs of another configuration.
    """
    if not seeds:
        raise ConfigError("seeds", "expected at least one seed")
    if values.get("seed") is not None:
        raise ConfigError("seed", "give either one --seed or --seeds, not both")
    out = values.get("out")
    if not out:
        raise ConfigError("out", "--seeds writes one run directory per seed under --out; give one")
    fields = {k: v for k, v in values.items() if k != "out"}
    if fields.get("threads") is not None:
        raise ConfigError("threads", "with --seeds the cores are divided among the --workers")
    fields.setdefault("checkpoint_every", CHECKPOINT_EVERY)
    fields.setdefault("nonfinite_patience", ROLLBACK_PATIENCE)
    for seed in {min(seeds), max(seeds)}:  # field errors before any run starts
        first = TrainConfig.from_dict({**fields, "seed": seed})
    # the validated task and length name the directories: given or defaulted, the same
    fields.update(task=first.task, length=first.length)
    label = first.method or first.cell
    runs = [PlannedRun("seeds", label, "train", {**fields, "seed": seed}) for seed in seeds]
    planned_names = {run.name for run in runs}
    others = sorted(
        p.name
        for p in Path(out).glob("seeds-*")
        if (p / "config.toml").is_file() and p.name not in planned_names
    )
    if others:
        message = (
            f"{out} holds seed runs this command does not plan ({others[0]}"
            f"{f' and {len(others) - 1} more' if len(others) > 1 else ''}); give their "
            "configuration and seeds again, or another --out"
        )
        raise ConfigError("out", message)
    refuse_other_configs(runs, out)
    return runs
