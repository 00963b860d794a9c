"""Echo state networks: a fixed random reservoir and a trained linear readout.

:class:`Reservoir` runs leaky tanh units with a fixed, spectral-radius-scaled
recurrent matrix; :class:`Ridge` fits the readout in closed form (float64, sums
accumulated over batches and streams); :func:`generate` runs a fitted network free,
feeding its predictions back. :func:`mackey_glass` and :func:`japanese_vowels`, the
data sets of the echo-state literature, live in :mod:`bptt.tasks` and are named here
too. No configuration and no run directory: ``bptt esn`` (:mod:`bptt.run`) builds on
this.
"""

from bptt.reservoir._generate import generate, nrmse
from bptt.reservoir._reservoir import NilpotentError, Reservoir
from bptt.reservoir._ridge import Ridge, series_features
from bptt.tasks import japanese_vowels, mackey_glass

__all__ = [
    "NilpotentError",
    "Reservoir",
    "Ridge",
    "generate",
    "japanese_vowels",
    "mackey_glass",
    "nrmse",
    "series_features",
]
