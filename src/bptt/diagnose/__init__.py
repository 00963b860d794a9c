"""Diagnostics: see exploding and vanishing gradients, measured, while training.

* :class:`Monitor` - per-step gradient norms (total and per parameter), loss and
  gradient-norm spike detectors (:class:`SpikeDetector`), non-finite values located
  by parameter and time step; flat dicts with stable keys.
* :func:`gradient_by_distance` - ||dL/ds_{T-1-d}|| for d = 0..T-1, its rate gamma, the
  horizon where it falls below 1e-3, where it underflows, subnormal fractions.
* :func:`jacobian_norms`, :func:`jacobian_product_norms` - spectral norms of the
  recurrent Jacobian along a trajectory (power iteration with torch.func);
  :func:`recurrent_spectrum` - eigenvalues and singular values of W_hh.
* :func:`saturation` - saturated gates and dead ReLUs per step.
* :func:`gradient_by_layer` - the same for every layer and direction of the user's
  own network (``torch.nn.RNN``/``LSTM``/``GRU`` modules of any depth, bidirectional,
  time-major, inside their module, under their loss); :func:`recurrent_layers` finds
  them.
* :func:`input_horizon` - for any sequence model (a Transformer, a parallel scan, no
  hidden state to tap): the norm of dL/dx_t by distance from the loss.
* :func:`diagnose` - the verdict on a model (``exploding``, ``vanishing``,
  ``healthy``), its reasons and remedies; for the user's network, layer by layer.
* :class:`RunRecord`, :func:`judge_run` - the verdict over a whole training run:
  what it saw (growth of the loss and gradient norm over the run, non-finite and
  clipped steps) with the probe of its final model; ``exploding``, ``truncated``,
  ``overfitting``, ``dead units``, ``saturated``, ``vanishing``, ``healthy but not
  learned`` or ``healthy``.
* :class:`Verdict` (a string enum: what a diagnosis can say), :class:`Remedy` (what
  to change and why, as data; the command line turns a run's into ``bptt train``
  commands).
* :mod:`bptt.diagnose.attractor` - the two-basin picture: gradients vanish inside a
  basin and explode at its boundary.
"""

from bptt.diagnose._distance import RecordPrecision, by_distance, fit_rate, gradient_by_distance
from bptt.diagnose._horizon import input_horizon
from bptt.diagnose._jacobian import jacobian_norms, jacobian_product_norms, recurrent_spectrum
from bptt.diagnose._kinds import Remedy, Verdict
from bptt.diagnose._layers import LayerPass, gradient_by_layer, recurrent_layers
from bptt.diagnose._monitor import Monitor, write_scalars
from bptt.diagnose._run import RUN_VERDICTS, RunRecord, RunVerdict, judge_run
from bptt.diagnose._saturation import saturation
from bptt.diagnose._spikes import SpikeDetector
from bptt.diagnose._verdict import NUMBER_KEYS, REMEDIES, Diagnosis, diagnose

__all__ = [
    "NUMBER_KEYS",
    "REMEDIES",
    "RUN_VERDICTS",
    "Diagnosis",
    "LayerPass",
    "Monitor",
    "RecordPrecision",
    "Remedy",
    "RunRecord",
    "RunVerdict",
    "SpikeDetector",
    "Verdict",
    "by_distance",
    "diagnose",
    "fit_rate",
    "gradient_by_distance",
    "gradient_by_layer",
    "input_horizon",
    "jacobian_norms",
    "jacobian_product_norms",
    "judge_run",
    "recurrent_layers",
    "recurrent_spectrum",
    "saturation",
    "write_scalars",
]
