"""Echo state networks: a fixed random reservoir and a trained linear readout.

:class:`Reservoir` runs leaky tanh units with a fixed, spectral-radius-scaled
recurrent matrix; :class:`Ridge` fits the readout in closed form (float64, sums
accumulated over batches and streams); :func:`generate` runs a fitted network free,
feeding its predictions back; :func:`mackey_glass` and :func:`japanese_vowels` are
the data.
"""

from bptt.reservoir._data import japanese_vowels, mackey_glass
from bptt.reservoir._generate import generate, nrmse
from bptt.reservoir._reservoir import Reservoir
from bptt.reservoir._ridge import Ridge, series_features

__all__ = [
    "Reservoir",
    "Ridge",
    "generate",
    "japanese_vowels",
    "mackey_glass",
    "nrmse",
    "series_features",
]
