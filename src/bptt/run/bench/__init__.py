"""The bench: profiles of runs, executed, tabulated and set beside the literature.

* What a profile runs: :func:`plan_bench`, :data:`PROFILES`, :data:`CLIP_DEMO`, each
  run a :class:`PlannedRun` (``_plan``); :func:`parse_seeds`, :func:`plan_seeds`: one
  configuration once per seed, ``bptt train --seeds`` (``_seeds``).
* Where the runs execute: :data:`EXECUTORS`, :func:`run_all` (``_executors``: here, in
  worker processes or on Ray; a finished run skipped, an interrupted one resumed);
  :func:`train_planned_stacked`: the planned runs of one model trained as one stacked
  model (``--stack``).
* What they gave: ``results.csv`` (:data:`RESULT_FIELDS`, :func:`write_results`,
  :func:`read_results`, :func:`typed_row`) and the leaderboard (:func:`aggregate`,
  :func:`entry_texts`, :func:`leaderboard`) (``_results``); the published results
  beside them (:data:`LITERATURE_ROWS`, :func:`published_result`, ``_literature``).

Built on :mod:`bptt.run.training` and :mod:`bptt.run.esn`. :func:`bptt.run.run_bench`,
which executes a plan and then writes the report's page, joins this part to
:mod:`bptt.run.report` (which reads this part's results) and so lives above both, in
``bptt/run/_bench.py``.
"""

from bptt.run.bench._executors import EXECUTORS, run_all, train_planned_stacked
from bptt.run.bench._literature import (
    FOUR_WAYS_ROWS,
    LITERATURE_ROWS,
    LiteratureRow,
    published_result,
)
from bptt.run.bench._plan import CLIP_DEMO, PROFILES, PlannedRun, plan_bench, refuse_other_configs
from bptt.run.bench._results import (
    RESULT_FIELDS,
    aggregate,
    entry_texts,
    leaderboard,
    read_results,
    typed_row,
    write_results,
)
from bptt.run.bench._seeds import parse_seeds, plan_seeds

__all__ = [
    "CLIP_DEMO",
    "EXECUTORS",
    "FOUR_WAYS_ROWS",
    "LITERATURE_ROWS",
    "PROFILES",
    "RESULT_FIELDS",
    "LiteratureRow",
    "PlannedRun",
    "aggregate",
    "entry_texts",
    "leaderboard",
    "parse_seeds",
    "plan_bench",
    "plan_seeds",
    "published_result",
    "read_results",
    "refuse_other_configs",
    "run_all",
    "train_planned_stacked",
    "typed_row",
    "write_results",
]
