"""Gradient clipping: PyTorch-compatible functions and adaptive threshold policies.

Functions (``torch.nn.utils`` contract, which does the work): :func:`clip_grad_norm_`,
:func:`clip_grad_value_`, and the primitives :func:`get_total_norm` and
:func:`clip_grads_with_norm_`; per tensor: :func:`clip_grad_norm_per_parameter_`
(Keras ``clipnorm``) and :func:`adaptive_clip_grad_` (AGC, unit by unit).

Policies (``policy(parameters) -> norm before clipping``, with ``threshold``,
``clipped`` and ``state_dict``): :class:`Fixed`, :class:`Value`,
:class:`Percentile` (AutoClip), :class:`ZScore` (ZClip), :class:`Calibrate`,
:class:`AdaptiveClip` (AGC), :class:`PerStep` (the hidden-state gradient taps) and
:class:`NoClip`.
"""

from bptt.clip._functional import (
    adaptive_clip_grad_,
    clip_grad_norm_,
    clip_grad_norm_per_parameter_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
)
from bptt.clip._policies import (
    AdaptiveClip,
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
    "AdaptiveClip",
    "Calibrate",
    "ClipPolicy",
    "Fixed",
    "NoClip",
    "PerStep",
    "Percentile",
    "Value",
    "ZScore",
    "adaptive_clip_grad_",
    "clip_grad_norm_",
    "clip_grad_norm_per_parameter_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "get_total_norm",
]
