"""Argument checks at the library's entry points: every error names the
argument and says what it got, as a ``TypeError`` (wrong kind) or ``ValueError`` (wrong
value), never an error from deep inside NumPy or torch."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import scipy.sparse as sparse
import torch
from torch import Tensor

_NUMBER_TYPES = (int, float, np.integer, np.floating)


def shown(value: Any) -> str:
    """A short description of a value for an error message."""
    if isinstance(value, (Tensor, np.ndarray)):
        return f"a {type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def integer(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {shown(value)}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ValueError(f"{name} must be an integer {bound}, got {value}")
    return value


def real(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    infinite: bool = False,
) -> float:
    """``value`` as a finite float in [low, high] (or (low, high] with ``open_low``);
    with ``infinite``, inf and -inf are numbers like any other (NaN never is)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, _NUMBER_TYPES):
        raise TypeError(f"{name} must be a real number, got {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        number = math.inf if value > 0 else -math.inf
    if math.isnan(number) or (math.isinf(number) and not infinite):
        raise ValueError(
            f"{name} must be {'a number' if infinite else 'finite'}, got {shown(value)}"
        )
    below = low is not None and (number <= low if open_low else number < low)
    if below or (high is not None and number > high):
        lower = "" if low is None else (f"> {low}" if open_low else f">= {low}")
        upper = "" if high is None else f"<= {high}"
        raise ValueError(
            f"{name} must be {' and '.join(s for s in (lower, upper) if s)}, got {number}"
        )
    return number


def flag(name: str, value: Any) -> bool:
    """``value`` as a bool (True/False only: a string such as "no" would read as True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {shown(value)}")
    return bool(value)


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """``value``, one of the strings ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {options}, got {shown(value)}")
    return value


def seed(name: str, value: Any) -> Any:
    """A seed NumPy's ``default_rng`` takes: None, an int >= 0, a SeedSequence or Generator."""
    if value is None or isinstance(value, (np.random.SeedSequence, np.random.Generator)):
        return value
    return integer(name, value, 0)


def array(
    name: str,
    value: Any,
    dtype: type = np.float64,
    *,
    sparse_ok: bool = False,
    axes: tuple[str, ...] | None = None,
) -> np.ndarray:
    """``value`` (a tensor, an array, or a scipy sparse matrix where allowed) as a NumPy
    array of ``dtype``; anything but real numbers is a TypeError, NaN or inf (also after
    the conversion to ``dtype``) a ValueError that says where, by ``axes`` names if given."""
    if isinstance(value, Tensor):
        if value.device.type == "meta":
            raise ValueError(f"{name} is a meta tensor, which holds no values")
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
        tensor = value.detach().cpu()
        if tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.to(torch.float64)  # integers, float16, bfloat16
        data = tensor.numpy()
    elif sparse_ok and sparse.issparse(value):
        data = value.toarray()
    elif isinstance(value, np.ndarray):
        data = value
    else:
        kinds = (
            "a torch.Tensor, a numpy.ndarray or a scipy sparse matrix"
            if sparse_ok
            else ("a torch.Tensor or a numpy.ndarray")
        )
        raise TypeError(f"{name} must be {kinds}, got {type(value).__name__}")
    if data.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {data.dtype}")
    data = np.ascontiguousarray(data, dtype=dtype)
    finite = np.isfinite(data)
    if not finite.all():
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        if axes is not None and len(axes) == len(where):
            place = ", ".join(f"{axis} {i}" for axis, i in zip(axes, where, strict=True))
        else:
            place = f"index {where}"
        raise ValueError(f"{name} holds NaN or inf (at {place})")
    return data


def lengths(name: str, value: Any, batch: int, steps: int) -> np.ndarray | None:
    """Valid lengths (B,) as int64, each in 1..steps, or None."""
    if value is None:
        return None
    data = None
    if isinstance(value, Tensor):
        integral = not (
            value.is_floating_point() or value.is_complex() or value.dtype == torch.bool
        )
        data = value.detach().cpu().numpy() if integral else None
    elif isinstance(value, (np.ndarray, list, tuple)):
        try:
            data = np.asarray(value)
        except (TypeError, ValueError):  # ragged or mixed
            data = None
    else:
        raise TypeError(f"{name} must be a tensor or array of integers (B,), got {shown(value)}")
    if data is None or data.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got {shown(value)}")
    if data.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) (one per series), got {data.shape}")
    bad = (data < 1) | (data > steps)
    if bad.any():
        raise ValueError(f"{name} must be in 1..{steps} (the steps given), got {data[bad][0]}")
    return data.astype(np.int64)


def function(name: str, value: Any, signature: str) -> Any:
    """``value``, a callable (``signature`` says how it is called, for the message)."""
    if not callable(value):
        raise TypeError(f"{name} must be callable as {signature}, got {shown(value)}")
    return value


def scalar(name: str, value: Any) -> float:
    """The one number of ``value``: a real number, or a tensor or array holding one
    value (any shape with one element), as a float (NaN and inf kept: they are news)."""
    if isinstance(value, Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must hold a real number, got {shown(value)}")
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar (one value), got {shown(value)}")
        return float(value.item())
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold a real number, got {shown(value)}")
        if value.size != 1:
            raise ValueError(f"{name} must be a scalar (one value), got {shown(value)}")
        return float(value.item())
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, _NUMBER_TYPES):
        raise TypeError(f"{name} must be a real number or a one-element tensor, got {shown(value)}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float's range
        return math.inf if value > 0 else -math.inf


def machine_memory() -> int | None:
    """The machine's physical memory in bytes (Linux's page size times its pages), or
    None where the system does not say."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that knows
        return None
    return pages * size if pages > 0 and size > 0 else None


def _device_memory(device: torch.device) -> int | None:
    """The memory of ``device`` in bytes: the machine's for the CPU, the card's for a
    CUDA device; None where unknown (meta tensors need none)."""
    if device.type == "cpu":
        return machine_memory()
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(index).total_memory)
    return None


def _bytes(count: float) -> str:
    if math.isinf(count):
        return "more than any machine has"
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{int(count)} bytes"


def fits_in_memory(
    sizes: str, elements: int, dtype: torch.dtype | None, device: Any = None
) -> None:
    """Refuse an allocation of ``elements`` numbers of ``dtype`` on ``device`` (None: the
    defaults) that exceeds the whole memory of that device (the machine's physical
    memory for the CPU), before it is tried: a ValueError naming the ``sizes`` (such as
    ``"hidden_size=10000000"``) and the bytes they need, instead of an allocator's error.
    An unknown device or dtype is left to torch (its own error names it)."""
    try:
        where = torch.device(device) if device is not None else torch.get_default_device()
        empty = torch.empty(0, dtype=dtype, device="meta")  # the default dtype for None
    except (TypeError, RuntimeError, ValueError):
        return
    available = _device_memory(where)
    needed = elements * empty.element_size()
    if available is not None and needed > available:
        amount = float(needed) if needed < 2**1000 else math.inf  # beyond float: inf
        raise ValueError(
            f"{sizes} need {amount:.3g} bytes ({_bytes(amount)}) of {empty.dtype} "
            f"parameters, more than the {_bytes(available)} of memory this {where.type} "
            "device has"
        )
