"""Gradient clipping: PyTorch-compatible functions and adaptive threshold policies.

Functions (``torch.nn.utils`` contract): :func:`clip_grad_norm_`,
:func:`clip_grad_value_`, :func:`clip_grad_norm_per_parameter_` (Keras
``clipnorm``), and the primitives :func:`get_total_norm` and
:func:`clip_grads_with_norm_`.

Policies (``policy(parameters) -> norm before clipping``, with ``threshold``,
``clipped`` and ``state_dict``): :class:`Fixed`, :class:`Value`,
:class:`Percentile` (AutoClip), :class:`ZScore` (ZClip), :class:`Calibrate`,
:class:`PerStep` (the hidden-state gradient taps) and :class:`NoClip`.
"""

from bptt.clip._functional import (
    clip_grad_norm_,
    clip_grad_norm_per_parameter_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
)
from bptt.clip._policies import (
    Calibrate,
    ClipPolicy,
    Fixed,
    NoClip,
    Percentile,
    PerStep,
    Value,
    ZScore,
)

__all__ = [
    "Calibrate",
    "ClipPolicy",
    "Fixed",
    "NoClip",
    "PerStep",
    "Percentile",
    "Value",
    "ZScore",
    "clip_grad_norm_",
    "clip_grad_norm_per_parameter_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "get_total_norm",
]
