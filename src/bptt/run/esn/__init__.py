"""The ESN runner (``bptt esn``): :class:`ESNConfig` and :func:`run_esn`, an echo state
network (:mod:`bptt.reservoir`) fitted on Mackey-Glass or Japanese Vowels
(:data:`ESN_TASKS`, with the settings each task changes in :data:`ESN_TASK_DEFAULTS`),
into a run directory. Built on :mod:`bptt.run.training` (its config fields, run
directory, threads and memory estimate).
"""

from bptt.run.esn._esn import ESN_TASK_DEFAULTS, ESN_TASKS, ESNConfig, run_esn

__all__ = ["ESN_TASKS", "ESN_TASK_DEFAULTS", "ESNConfig", "run_esn"]
