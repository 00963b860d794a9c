"""The private names of torch that bptt needs, in one place, each with the reason.

torch 2.13 offers no public spelling of these, so the rest of the package
imports them from here and nowhere else (``tests/test_torch_compat.py`` holds both
rules: every name below resolves in the installed torch and behaves as used, and no
other module names a private part of torch). A name torch moves or removes is then
one failing test that names it, and one place to change.

``torch._C._are_functorch_transforms_active``
    Whether a ``torch.func`` transform (``vmap``, ``grad``, ``jvp``, ...) is running.
    The engines ask it twice: before a data-dependent check on the input
    (``bool(torch.isfinite(x).all())`` cannot run on a batched tensor), and before
    choosing a hand-written backward (an ``autograd.Function`` with neither a vmap nor
    a forward-mode rule). ``torch.func`` has no public question for it.
``torch._foreach_norm``, ``torch._foreach_mul_``
    One kernel for a list of tensors, as ``torch.nn.utils.clip_grad_norm_`` and
    ``torch.optim`` use them. bptt needs them where ``torch.nn.utils`` has no public
    function: each tensor's norm (per-parameter clipping, a norm measured in float64,
    the monitor) and one factor per tensor. The public ``torch.foreach`` namespace that
    replaces them is not in torch 2.13.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["PRIVATE", "foreach_mul_", "foreach_norm", "functorch_transforms_active"]

# Each private name and what bptt uses it for (the message when torch lacks it).
PRIVATE = {
    "torch._C._are_functorch_transforms_active": (
        "to keep data-dependent checks and hand-written backwards out of torch.func transforms"
    ),
    "torch._foreach_norm": "for each gradient's norm in one kernel",
    "torch._foreach_mul_": "to scale a list of gradients in one kernel",
}


def resolve(name: str) -> Any:
    """The object a dotted ``torch...`` name in :data:`PRIVATE` stands for.

    Raises:
        RuntimeError: the installed torch has no such name (it says which, and why
            bptt needs it).
    """
    found: Any = torch
    for part in name.split(".")[1:]:
        found = getattr(found, part, None)
        if found is None:
            raise RuntimeError(
                f"torch {torch.__version__} has no {name}, which bptt uses "
                f"{PRIVATE.get(name, 'internally')}; install a torch that pyproject.toml "
                "allows, or update src/bptt/_torch_compat.py"
            )
    return found


def functorch_transforms_active() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, jvp, ...) is running now."""
    return bool(resolve("torch._C._are_functorch_transforms_active")())


def foreach_norm(
    tensors: Sequence[Tensor], ord: float = 2.0, dtype: torch.dtype | None = None
) -> list[Tensor]:
    """Each tensor's ``ord``-norm (0-dim tensors), computed in ``dtype`` if given: what
    ``torch.linalg.vector_norm`` gives for each, in one kernel where torch has one."""
    return list(resolve("torch._foreach_norm")(list(tensors), ord, dtype=dtype))


def foreach_mul_(tensors: Sequence[Tensor], factors: Tensor | Sequence[Tensor]) -> None:
    """Multiply each tensor in place by one 0-dim factor, or by its own from a list."""
    other = factors if isinstance(factors, Tensor) else list(factors)
    resolve("torch._foreach_mul_")(list(tensors), other)
