"""The series of the echo-state literature: Mackey-Glass (generated) and Japanese Vowels
(shipped with sktime)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from bptt import _checks

__all__ = ["japanese_vowels", "mackey_glass"]

_MAX_LAG = 10_000_000  # tau / h: the delayed values held in memory (80 MB)
# n_timesteps is at most 100 times that (8 GB, and hours of the integration loop)


def mackey_glass(
    n_timesteps: int,
    tau: float = 17,
    a: float = 0.2,
    b: float = 0.1,
    n: float = 10,
    x0: float = 1.2,
    h: float = 1.0,
    *,
    seed: int | None = None,
    history: np.ndarray | Tensor | None = None,
) -> Tensor:
    r"""The Mackey-Glass series, dx/dt = a x(t - tau) / (1 + x(t - tau)^n) - b x(t).

    Integrated with steps of h by the classical Runge-Kutta scheme applied to the
    equation with the delayed value x(t - tau) held fixed over each step (the delayed
    value is the series' own value tau/h steps back): the discretisation ReservoirPy's
    ``mackey_glass`` uses, so the two agree given the same history. The tau/h values
    before the start are ``history`` if given, else x0 + U[-0.1, 0.1) noise drawn
    with ``seed``; the series starts at x0.

    Args:
        n_timesteps: values to return (at most 10**9: the series is held in memory).
        tau, a, b, n: the equation's parameters (tau = 17: the usual chaotic regime).
        x0: the initial value.
        h: the step.
        seed: seeds the random history.
        history: the values before the start (at least tau/h of them).

    Returns:
        A float64 tensor (n_timesteps, 1).

    Example:
        >>> mackey_glass(5, seed=0).shape
        torch.Size([5, 1])
    """
    n_timesteps = _checks.integer("n_timesteps", n_timesteps, 1, _MAX_LAG * 100)
    tau = _checks.real("tau", tau, 0.0)
    h = _checks.real("h", h, 0.0, open_low=True)
    a, b, n, x0 = (_checks.real(k, v) for k, v in (("a", a), ("b", b), ("n", n), ("x0", x0)))
    seed = _checks.seed("seed", seed)
    if tau / h > _MAX_LAG:
        raise ValueError(
            f"tau / h must be at most {_MAX_LAG:,} (the delayed values kept), got "
            f"tau={tau:g}, h={h:g}"
        )
    lag = int(np.floor(tau / h))
    if history is None:
        rng = np.random.default_rng(seed)
        past = x0 + 0.2 * (rng.random(lag) - 0.5)
    else:
        if isinstance(history, (list, tuple)):
            try:
                history = np.asarray(history)
            except ValueError as err:  # ragged
                raise ValueError(f"history must be a flat sequence of numbers: {err}") from err
        past = _checks.array("history", history).reshape(-1)
        if past.shape[0] < lag:
            raise ValueError(f"history needs at least tau/h = {lag} values, got {past.shape[0]}")
        past = past[past.shape[0] - lag :]
    series = np.empty(lag + n_timesteps)
    series[:lag] = past
    x, zero = np.float64(x0), np.float64(0.0)  # NumPy scalars: overflow gives inf, not an error
    with np.errstate(all="ignore"):  # a series that overflows is reported below
        for i in range(lag, lag + n_timesteps):
            series[i] = x
            delayed = series[i - lag] if tau > 0 else zero
            forcing = a * delayed / (1 + delayed**n)  # held fixed over the step
            k1 = h * (-b * x + forcing)
            k2 = h * (-b * (x + k1 / 2) + forcing)
            k3 = h * (-b * (x + k2 / 2) + forcing)
            k4 = h * (-b * (x + k3) + forcing)
            x = x + (k1 + 2 * k2 + 2 * k3 + k4) / 6
    finite = np.isfinite(series[lag:])
    if not finite.all():
        raise ValueError(
            f"the series leaves the finite numbers at step {int(np.argmin(finite))}: tau={tau:g}, "
            f"a={a:g}, b={b:g}, n={n:g}, x0={x0:g}, h={h:g} and the history give no bounded "
            "solution at this step size"
        )
    return torch.from_numpy(series[lag:].reshape(-1, 1))


def japanese_vowels() -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """Japanese Vowels (Kudo et al. 1999): 9 speakers, 12 LPC cepstrum coefficients per
    frame; 270 training and 370 test utterances of 7-29 frames.

    Loaded from the copy inside the sktime package (works offline); read once a
    process (importing sktime and parsing take seconds), each call returns fresh copies.

    Returns:
        ``{"train": (x, lengths, labels), "test": (x, lengths, labels)}`` with x
        (B, T_max, 12) zero-padded float64, lengths (B,) and labels (B,) in 0..8.

    Raises:
        ImportError: sktime is missing (with how to install it).
    """
    if not _VOWELS:
        _VOWELS.update(_read_japanese_vowels())
    return {
        split: (x.clone(), lengths.clone(), labels.clone())
        for split, (x, lengths, labels) in _VOWELS.items()
    }


_VOWELS: dict[str, tuple[Tensor, Tensor, Tensor]] = {}  # japanese_vowels' data, once read


def _read_japanese_vowels() -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    try:
        from sktime.datasets import load_japanese_vowels
    except ImportError as err:
        raise ImportError(
            "Japanese Vowels ships inside the sktime package: pip install sktime"
        ) from err
    out = {}
    for split in ("train", "test"):
        frame, labels = load_japanese_vowels(split=split, return_type="nested_univ")
        series = [
            np.stack([np.asarray(frame.iloc[i, d], dtype=np.float64) for d in range(12)], 1)
            for i in range(len(frame))
        ]
        lengths = torch.tensor([s.shape[0] for s in series])
        x = torch.zeros(len(series), int(lengths.max()), 12, dtype=torch.float64)
        for i, s in enumerate(series):
            x[i, : s.shape[0]] = torch.from_numpy(s)
        y = torch.tensor([int(label) - 1 for label in labels])
        out[split] = (x, lengths, y)
    return out
