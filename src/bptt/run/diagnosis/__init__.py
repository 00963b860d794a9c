"""The diagnosis of a finished run directory (``bptt diagnose RUN_DIR``):
:func:`diagnose_run` judges what the run saw (its ``summary.json``) together with a
fresh probe of its model, and adds the remedies that fit
(:func:`bptt.run.training.remedies_for`, which the training loop writes into every
summary too). Built on :mod:`bptt.run.training`.
"""

from bptt.run.diagnosis._diagnosis import diagnose_run

__all__ = ["diagnose_run"]
