"""The readout: ridge regression accumulated over batches and streams, solved in float64.

The arithmetic runs in torch (float64), on the thread pool the reservoir's batched loop
uses: NumPy's OpenBLAS workers keep spinning for a while after each call, and on a
small machine they were measured to slow the torch work that follows by 2-3x.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["Ridge", "series_features"]


def _rows(states: Tensor, washout: int, lengths: Tensor | None) -> Tensor:
    """States (B, T, N) or (T, N) as the (M, N) float64 rows that count: each series'
    steps from ``washout`` to its length."""
    array = states.detach().cpu().to(torch.float64)
    if array.dim() == 2:
        array = array[None]
    if array.dim() != 3:
        raise ValueError(f"states must be (B, T, N) or (T, N), got {tuple(states.shape)}")
    batch = array.shape[0]
    if lengths is None:
        return array[:, washout:].reshape(-1, array.shape[2])
    ends = [int(n) for n in lengths.cpu()]
    pieces = [array[b, washout : ends[b]] for b in range(batch)]
    return torch.cat(pieces) if pieces else array.new_zeros((0, array.shape[2]))


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

    def __init__(self, alpha: float = 0.0, fit_bias: bool = True) -> None:
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha, self.fit_bias = float(alpha), bool(fit_bias)
        self.weight: np.ndarray | None = None  # (N, O)
        self.bias: np.ndarray | None = None  # (O,)
        self.reset()

    def reset(self) -> None:
        """Forget the accumulated sums."""
        self._xtx = self._xty = self._xsum = self._ysum = None
        self._count = 0

    def partial_fit(
        self, states: Tensor, y: Tensor, washout: int = 0, lengths: Tensor | None = None
    ) -> Ridge:
        """Add (states, targets) to the sums: states (B, T, N) or (T, N), y (B, T, O) or
        (T, O); the first ``washout`` steps of each series are left out."""
        x_rows = _rows(states, washout, lengths)
        target = y if y.dim() == states.dim() else y.unsqueeze(-1)
        y_rows = _rows(target, washout, lengths)
        if x_rows.shape[0] != y_rows.shape[0]:
            raise ValueError(f"states give {x_rows.shape[0]} rows but y gives {y_rows.shape[0]}")
        sums = (x_rows.T @ x_rows, x_rows.T @ y_rows, x_rows.sum(0), y_rows.sum(0))
        if self._xtx is None:  # the first batch's sums are the totals (no zeros to add to)
            self._xtx, self._xty, self._xsum, self._ysum = sums
        else:
            for total, part in zip(
                (self._xtx, self._xty, self._xsum, self._ysum), sums, strict=True
            ):
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
        system, xty = self._xtx.clone(), self._xty.clone()  # the sums stay as they are
        if self.fit_bias:
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
        self, states: Tensor, y: Tensor, washout: int = 0, lengths: Tensor | None = None
    ) -> Ridge:
        """Reset, add one batch or stream and solve."""
        self.reset()
        return self.partial_fit(states, y, washout, lengths).solve()

    def predict(self, states: Tensor) -> Tensor:
        """Readout of states (..., N): a float64 tensor (..., O)."""
        if self.weight is None:
            raise ValueError("the readout is not fitted yet")
        array = states.detach().cpu().to(torch.float64)
        return array @ torch.from_numpy(self.weight) + torch.from_numpy(self.bias)


def series_features(states: Tensor, lengths: Tensor | None = None, reduce: str = "mean") -> Tensor:
    """One feature vector per series for classification: (B, T, N) -> (B, N).

    ``reduce="mean"`` averages each series' states over its valid steps; ``"last"``
    takes its last valid state.
    """
    if reduce not in ("mean", "last"):
        raise ValueError(f"reduce must be 'mean' or 'last', got {reduce!r}")
    batch, steps = states.shape[:2]
    ends = torch.full((batch,), steps) if lengths is None else torch.as_tensor(lengths)
    if reduce == "last":
        return states[torch.arange(batch), ends - 1]
    mask = (torch.arange(steps)[None, :] < ends[:, None]).to(states.dtype)  # (B, T)
    return (states * mask[..., None]).sum(1) / ends[:, None].to(states.dtype)
