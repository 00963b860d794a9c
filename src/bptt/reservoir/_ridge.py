"""The readout: ridge regression accumulated over batches and streams, solved in float64.

The arithmetic runs in torch (float64), on the thread pool the reservoir's batched loop
uses: NumPy's OpenBLAS workers keep spinning for a while after each call, and on a
small machine they were measured to slow the torch work that follows by 2-3x.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import Tensor

from bptt import _checks

__all__ = ["Ridge", "series_features"]


def _matrix_rows(name: str, value: Tensor | np.ndarray) -> Tensor:
    """A tensor or array (B, T, N) or (T, N) of real numbers as a float64 tensor
    (B, T, N), checked."""
    if not isinstance(value, (Tensor, np.ndarray)):
        raise TypeError(
            f"{name} must be a tensor or array (B, T, N) or (T, N), got {_checks.shown(value)}"
        )
    if value.ndim not in (2, 3) or 0 in value.shape:
        raise ValueError(
            f"{name} must have shape (B, T, N) or (T, N), none of them 0, got {tuple(value.shape)}"
        )
    data = torch.from_numpy(_checks.array(name, value))
    return data if data.dim() == 3 else data[None]


def _rows(array: Tensor, washout: int, lengths: np.ndarray | None) -> Tensor:
    """The (M, N) rows of a checked (B, T, N) array that count: each series' steps from
    ``washout`` to its length."""
    if lengths is None:
        return array[:, washout:].reshape(-1, array.shape[2])
    pieces = [array[b, washout : int(n)] for b, n in enumerate(lengths)]
    return torch.cat(pieces)


class Ridge:
    r"""Closed-form ridge readout, y = W_out^T x + b.

    Minimises ||Y - X W - 1 b||^2 + alpha ||W||^2 (the bias is not penalised): the
    sums X^T X, X^T Y, sum x, sum y and the count are accumulated in float64 over any
    number of :meth:`partial_fit` calls (memory O(N^2), not O(T N)); :meth:`solve`
    centres them and solves (X_c^T X_c + alpha I) W = X_c^T Y_c in float64, as
    ReservoirPy's Ridge does. Solving in float32 was measured here to be 50x worse and
    unstable on Mackey-Glass.

    Args:
        alpha: the ridge penalty (ReservoirPy's ``ridge``).
        fit_bias: fit the intercept b (else b = 0).
    """

    # The sums of the data so far (None before the first partial_fit): X^T X, X^T Y,
    # the column sums of X and of Y.
    _xtx: Tensor | None
    _xty: Tensor | None
    _xsum: Tensor | None
    _ysum: Tensor | None

    def __init__(self, alpha: float = 0.0, fit_bias: bool = True) -> None:
        self.alpha = _checks.real("alpha", alpha, 0.0)
        self.fit_bias = _checks.flag("fit_bias", fit_bias)
        self.weight: np.ndarray | None = None  # (N, O)
        self.bias: np.ndarray | None = None  # (O,)
        self.reset()

    def reset(self) -> None:
        """Forget the accumulated sums."""
        self._xtx = self._xty = self._xsum = self._ysum = None
        self._count = 0

    def partial_fit(
        self,
        states: Tensor | np.ndarray,
        y: Tensor | np.ndarray,
        washout: int = 0,
        lengths: Tensor | None = None,
    ) -> Ridge:
        """Add (states, targets) to the sums; the first ``washout`` steps of each series
        are left out.

        Args:
            states: (B, T, N) or (T, N), a tensor or NumPy array of real numbers.
            y: the targets (B, T, O) or (T, O), or (B, T) / (T,) for one output.
            washout: steps at the start of each series left out (< T).
            lengths: (B,) valid steps of each series (1..T), or None.

        Raises:
            TypeError: an argument of the wrong kind.
            ValueError: shapes that disagree (with each other or with earlier calls),
                NaN or inf, or nothing left after the washout.
        """
        x = _matrix_rows("states", states)  # (B, T, N)
        if not isinstance(y, (Tensor, np.ndarray)):
            raise TypeError(f"y must be a tensor or array, got {_checks.shown(y)}")
        if y.ndim == states.ndim - 1:
            y = y[..., None]  # one output
        target = _matrix_rows("y", y) if y.ndim == states.ndim else None
        if target is None or target.shape[:2] != x.shape[:2]:
            expected = "(B, T, O) or (B, T)" if states.ndim == 3 else "(T, O) or (T,)"
            raise ValueError(
                f"y must have shape {expected} with the (B, T) of states {tuple(states.shape)}, "
                f"got {tuple(y.shape)}"
            )
        batch, steps, units = x.shape
        washout = _checks.integer("washout", washout, 0)
        valid = _checks.lengths("lengths", lengths, batch, steps)
        if self._xty is not None and (units, target.shape[2]) != tuple(self._xty.shape):
            raise ValueError(
                f"states and y must have the N and O of the earlier calls, "
                f"{tuple(self._xty.shape)}; got N = {units}, O = {target.shape[2]} "
                "(call reset() first for another problem)"
            )
        longest = steps if valid is None else int(valid.max())
        if washout >= longest:
            raise ValueError(
                f"washout ({washout}) leaves no step to fit: the longest series has {longest}"
            )
        x_rows, y_rows = _rows(x, washout, valid), _rows(target, washout, valid)
        sums = (x_rows.T @ x_rows, x_rows.T @ y_rows, x_rows.sum(0), y_rows.sum(0))
        if self._xtx is None:  # the first batch's sums are the totals (no zeros to add to)
            self._xtx, self._xty, self._xsum, self._ysum = sums
        else:
            totals = cast("tuple[Tensor, ...]", (self._xtx, self._xty, self._xsum, self._ysum))
            for total, part in zip(totals, sums, strict=True):  # the four are set together
                total += part
        self._count += x_rows.shape[0]
        return self

    def solve(self) -> Ridge:
        """Solve for the weights from the sums so far.

        Raises:
            ValueError: no data yet; ``numpy.linalg.LinAlgError`` (a ValueError) if the
                system is singular (alpha = 0 and a state that never varies).
        """
        if self._count == 0:
            raise ValueError("no data: call partial_fit (or fit) first")
        assert self._xtx is not None and self._xty is not None  # set with the count
        system, xty = self._xtx.clone(), self._xty.clone()  # the sums stay as they are
        if self.fit_bias:
            assert self._xsum is not None and self._ysum is not None
            x_mean, y_mean = self._xsum / self._count, self._ysum / self._count
            system -= self._count * torch.outer(x_mean, x_mean)
            xty -= self._count * torch.outer(x_mean, y_mean)
        system.diagonal().add_(self.alpha)
        try:
            weight = torch.linalg.solve(system, xty)
        except torch.linalg.LinAlgError as err:  # a RuntimeError; callers expect ValueError
            raise np.linalg.LinAlgError(
                f"the ridge system is singular (alpha = {self.alpha}): some state never "
                "varies; give alpha > 0"
            ) from err
        bias = y_mean - x_mean @ weight if self.fit_bias else torch.zeros(xty.shape[1])
        self.weight, self.bias = weight.numpy(), bias.to(torch.float64).numpy()
        return self

    def fit(
        self,
        states: Tensor | np.ndarray,
        y: Tensor | np.ndarray,
        washout: int = 0,
        lengths: Tensor | None = None,
    ) -> Ridge:
        """Reset, add one batch or stream and solve (arguments as :meth:`partial_fit`)."""
        self.reset()
        return self.partial_fit(states, y, washout, lengths).solve()

    def predict(self, states: Tensor | np.ndarray) -> Tensor:
        """Readout of states (..., N), a tensor or NumPy array: a float64 tensor (..., O).

        Raises:
            TypeError: states is not a tensor or array of real numbers.
            ValueError: the readout is not fitted, states' last dimension is not N, or
                states hold NaN or inf.
        """
        if self.weight is None:
            raise ValueError("the readout is not fitted yet: call fit (or partial_fit and solve)")
        if not isinstance(states, (Tensor, np.ndarray)):
            raise TypeError(
                f"states must be a tensor or array (..., N), got {_checks.shown(states)}"
            )
        units = self.weight.shape[0]
        if states.ndim < 1 or states.shape[-1] != units:
            raise ValueError(
                f"states must have shape (..., {units}) (the fitted N), got {tuple(states.shape)}"
            )
        array = torch.from_numpy(_checks.array("states", states))
        return array @ torch.from_numpy(self.weight) + torch.from_numpy(self.bias)


def series_features(
    states: Tensor | np.ndarray, lengths: Tensor | None = None, reduce: str = "mean"
) -> Tensor:
    """One feature vector per series for classification: (B, T, N) -> (B, N).

    Args:
        states: (B, T, N), a tensor (its dtype is kept) or NumPy array (float64).
        lengths: (B,) valid steps of each series (1..T), or None for T.
        reduce: ``"mean"`` averages each series' states over its valid steps;
            ``"last"`` takes its last valid state.

    Raises:
        TypeError: states or lengths of the wrong kind.
        ValueError: wrong shapes, lengths out of range, NaN or inf, or another reduce.
    """
    reduce = _checks.choice("reduce", reduce, ("mean", "last"))
    if not isinstance(states, (Tensor, np.ndarray)):
        raise TypeError(f"states must be a tensor or array (B, T, N), got {_checks.shown(states)}")
    if states.ndim != 3 or 0 in states.shape:
        raise ValueError(
            f"states must have shape (B, T, N), none of them 0, got {tuple(states.shape)}"
        )
    keep = states.dtype if isinstance(states, Tensor) and states.dtype.is_floating_point else None
    data = torch.from_numpy(_checks.array("states", states))
    data = data if keep is None else data.to(keep)
    batch, steps = data.shape[:2]
    valid = _checks.lengths("lengths", lengths, batch, steps)
    ends = torch.full((batch,), steps) if valid is None else torch.from_numpy(valid)
    if reduce == "last":
        return data[torch.arange(batch), ends - 1]
    mask = (torch.arange(steps)[None, :] < ends[:, None]).to(data.dtype)  # (B, T)
    return (data * mask[..., None]).sum(1) / ends[:, None].to(data.dtype)
