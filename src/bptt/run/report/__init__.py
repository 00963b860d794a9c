"""The report: ``report.html``, one self-contained page for a run directory
(:func:`write_run_report`) or a bench directory (:func:`write_bench_report`);
:func:`write_report` tells which it was given.

Built on :mod:`bptt.run.training` (the run directory's files) and
:mod:`bptt.run.bench` (``results.csv``, the published results). It draws with
:mod:`bptt.run._figures`, the figures it shares with training's TensorBoard log.
"""

from bptt.run.report._report import write_bench_report, write_report, write_run_report

__all__ = ["write_bench_report", "write_report", "write_run_report"]
