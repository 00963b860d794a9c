"""Truncated backprop through time, TBPTT(k1, k2), over streams of any length.

Williams & Peng (1990) BPTT(h; h'): the hidden state is carried forward over the
whole stream, an update is made every k1 steps, and each update backpropagates k2
steps. Frameworks usually allow only k1 = k2 (one detach per chunk); here any
1 <= k1 <= k2.

The definition the tests hold it to. At each update time t = k1, 2 k1, ...:

1. the forward pass runs the current parameters over the inputs of steps
   t - k2 + 1 .. t (from step 1 at the stream's start), starting from the stored,
   detached state at step t - k2 (the initial state when t - k2 <= 0);
2. the loss is ``loss_fn`` on the predictions and targets of the last k1 steps,
   t - k1 + 1 .. t;
3. backward (through the taps), clip, optimizer step;
4. the state at step t + k1 - k2, which the next update starts from, is taken from
   this forward pass (detached) and stored; so is the state at t (``state``).

Only the last k2 inputs and k1 targets are kept, so memory is O(k2 B H) whatever the
stream's length, and the stream is never re-run from its beginning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bptt import _checks
from bptt.cells import State, check_input
from bptt.model import SequenceModel
from bptt.taps import Delta, as_taps

__all__ = ["TBPTT"]


class _Shifted:
    """A tap seen through a segment of a window: step t of the segment is step t + offset
    of the window. Has no ``begin``: the window begins the taps once."""

    def __init__(self, tap: Callable[[int, Delta], Delta], offset: int) -> None:
        self.tap, self.offset = tap, offset

    def __call__(self, t: int, delta: Delta) -> Delta:
        return self.tap(t + self.offset, delta)


def _detach(state: Any) -> Any:
    """The state detached: a tensor, or a tuple of them (a tuple state; a state per
    layer of a :class:`bptt.SequenceModel` of several)."""
    if isinstance(state, tuple):
        return tuple(_detach(part) for part in state)
    return state.detach()


class TBPTT:
    """Train a sequence model on a stream with truncated backprop through time.

    Args:
        model: a :class:`bptt.SequenceModel` with ``readout="all"``.
        k1: steps between updates (>= 1).
        k2: steps each update backpropagates through (>= k1).
        loss_fn: ``loss_fn(predictions, targets) -> scalar`` on the last k1 steps:
            predictions (B, k1, O), targets (B, k1, ...).
        optimizer: a ``torch.optim.Optimizer`` over the model's parameters (None when
            the caller makes the updates itself from :meth:`losses`).
        clip: optional clipping, called as ``clip(parameters)`` after backward (a
            :mod:`bptt.clip` policy, or e.g. ``lambda ps: clip_grad_norm_(ps, 1.0)``).
        taps: hidden-gradient taps; within an update, ``t`` counts the steps of its
            window from 0, and taps with ``begin`` are begun once per window.

    Attributes:
        position: stream steps received so far.
        updates: updates due so far (made or skipped).
        skipped: updates :meth:`step` skipped for a non-finite loss or gradient.
        state: the detached state at the last update time (None before the first).

    Raises:
        ValueError: k1 > k2, a non-positive k, or a model that does not read out
            every step.
        TypeError: ``loss_fn`` or ``clip`` is not callable, ``optimizer`` is not an
            optimizer (nor None), ``taps`` is not a sequence of callables.

    Example:
        >>> import bptt
        >>> model = bptt.SequenceModel(bptt.cells.GRUCell(1, 8), 1, readout="all")
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> trainer = TBPTT(model, k1=5, k2=10, loss_fn=torch.nn.functional.mse_loss, optimizer=opt)
        >>> x = torch.randn(2, 23, 1)
        >>> len(trainer.fit(x, x)), trainer.position
        (4, 23)
    """

    def __init__(
        self,
        model: SequenceModel,
        k1: int,
        k2: int,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        optimizer: torch.optim.Optimizer | None,
        clip: Callable[[Sequence[nn.Parameter]], Any] | None = None,
        taps: Sequence[Callable[[int, Delta], Delta]] = (),
    ) -> None:
        k1, k2 = _checks.integer("k1", k1, 1), _checks.integer("k2", k2, 1)
        if k1 > k2:
            raise ValueError(
                f"k1 = {k1} > k2 = {k2}: the steps between k2 and k1 back would get no "
                "gradient at all; choose k1 <= k2"
            )
        if getattr(model, "readout", None) != "all":
            raise ValueError(
                f"model must be a SequenceModel with readout='all' (TBPTT needs a prediction "
                f"per step), got {_checks.shown(model)}"
            )
        if getattr(model, "bidirectional", False):
            raise ValueError(
                "a bidirectional model reads each step's future, which a stream read "
                "chunk by chunk does not have: truncated BPTT needs forward-only layers"
            )
        _checks.function("loss_fn", loss_fn, "loss_fn(predictions, targets) -> scalar")
        if optimizer is not None and not (
            callable(getattr(optimizer, "step", None))
            and callable(getattr(optimizer, "zero_grad", None))
        ):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer (with step() and zero_grad()) "
                f"or None, got {_checks.shown(optimizer)}"
            )
        if clip is not None:
            _checks.function("clip", clip, "clip(parameters), e.g. a bptt.clip policy")
        self.model, self.k1, self.k2 = model, k1, k2
        self.loss_fn, self.optimizer, self.clip = loss_fn, optimizer, clip
        self.taps = as_taps(taps)
        recording = [tap for tap in self.taps if callable(getattr(tap, "begin", None))]
        if recording and len(getattr(model, "unrolls", ())) > 1:
            raise ValueError(
                f"{recording[0]!r} keeps a record of one unroll and this model runs "
                f"{len(model.unrolls)} (layers and directions): truncated BPTT shares its "
                "taps among them; record with a one-layer model, or unroll the model's "
                "cells yourself"
            )
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.position = 0
        self.updates = 0
        self.skipped = 0
        self.last_window = 0
        self.state: State | None = None
        self._start: State | None = None  # detached state at the next window's start
        self._x: Tensor | None = None  # inputs from the next window's start on (B, n, F)
        self._y: Tensor | None = None  # targets after the last update time (B, m, ...)

    @property
    def window_start(self) -> int:
        """The step after which the next update's window begins (its start state's step)."""
        return max(0, (self.updates + 1) * self.k1 - self.k2)

    def fit(self, x: Tensor, y: Tensor) -> list[dict[str, Any]]:
        """Feed a whole stream (B, T, ...) at once; same as one :meth:`step`."""
        return self.step(x, y)

    def step(self, x_chunk: Tensor, y_chunk: Tensor) -> list[dict[str, Any]]:
        """Feed the next steps of the stream, any number; make the updates now due.

        Args:
            x_chunk: inputs (B, n, F).
            y_chunk: targets (B, n, ...), aligned with the inputs.

        An update whose loss or gradient is NaN or inf is skipped, as ``bptt train``
        skips such steps: no clipping, no optimizer step (the parameters stay as they
        were), the gradients cleared; it is counted in :attr:`skipped`, and the first
        one warns (a ``RuntimeWarning``).

        Returns:
            One dict per update due: ``update``, ``time`` (t), ``window`` (steps
            backpropagated), ``loss``, ``skipped`` (True: non-finite, not applied), and
            ``grad_norm`` when ``clip`` returns a norm.
        """
        if self.optimizer is None:
            raise ValueError("step() needs an optimizer; without one, iterate losses()")
        rows = []
        for loss in self.losses(x_chunk, y_chunk):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            row: dict[str, Any] = {"update": self.updates, "time": self.updates * self.k1}
            row.update({"window": self.last_window, "loss": loss.item()})
            finite = math.isfinite(row["loss"]) and _finite_gradients(self.params)
            if finite:
                norm = self.clip(self.params) if self.clip is not None else None
                self.optimizer.step()
                if isinstance(norm, Tensor):
                    row["grad_norm"] = norm.item()
            else:  # as `bptt train` does: no step on NaN or inf, counted
                self.optimizer.zero_grad(set_to_none=True)
                self._skip(row)
            row["skipped"] = not finite
            rows.append(row)
        return rows

    def _skip(self, row: dict[str, Any]) -> None:
        """Count a skipped update; warn at the first."""
        self.skipped += 1
        if self.skipped == 1:
            warnings.warn(
                f"TBPTT update {row['update']} (stream step {row['time']}) had a non-finite "
                f"loss ({row['loss']}) or gradient and was skipped: the parameters are "
                "unchanged. Later non-finite ones are skipped too, counted in TBPTT.skipped and "
                "marked 'skipped' in step()'s rows, without another warning. A NaN in the stream "
                "stays in the carried state: check the inputs.",
                RuntimeWarning,
                stacklevel=3,
            )

    def losses(self, x_chunk: Tensor, y_chunk: Tensor) -> Iterator[Tensor]:
        """Feed the next steps; yield the loss of each update now due, after its forward.

        For a training loop that does its own backward, clipping and optimizer step:
        do them before asking for the next loss (the next window's forward must see
        the updated parameters). :meth:`step` is this with the given optimizer.
        """
        self._check(x_chunk, y_chunk)
        self._x = x_chunk if self._x is None else torch.cat([self._x, x_chunk], dim=1)
        self._y = y_chunk if self._y is None else torch.cat([self._y, y_chunk], dim=1)
        self.position += x_chunk.shape[1]
        while self.position >= (self.updates + 1) * self.k1:
            yield self._window_loss()

    def _window_loss(self) -> Tensor:
        """The next update's forward pass and loss; moves the stored states on."""
        assert self._x is not None and self._y is not None  # losses() stored the chunks
        t = (self.updates + 1) * self.k1
        start = self.window_start
        steps = t - start
        x = self._x[:, :steps]  # inputs of steps start+1 .. t
        targets = self._y[:, : self.k1]  # the k1 steps after the last update
        following = t + self.k1 - self.k2  # the next window's start step
        split = min(max(following - start, 0), steps)  # segment A ends at that step
        for tap in self.taps:
            begin = getattr(tap, "begin", None)
            if callable(begin):
                begin(steps)
        state = self._start
        predictions = []
        next_start = None
        if split > 0:
            taps = tuple(_Shifted(tap, 0) for tap in self.taps)
            part, state = self.model(x[:, :split], state=state, taps=taps)
            predictions.append(part)
            next_start = _detach(state)
        if split < steps:
            taps = tuple(_Shifted(tap, split) for tap in self.taps)
            part, state = self.model(x[:, split:], state=state, taps=taps)
            predictions.append(part)
        predicted = torch.cat(predictions, dim=1)[:, -self.k1 :]  # (B, k1, O)
        loss = self.loss_fn(predicted, targets)
        self.updates += 1
        self.last_window = steps
        assert state is not None  # steps >= k1 >= 1: a forward ran
        self.state = _detach(state)
        self._start = next_start  # None while the next window starts at the stream's start
        keep_from = max(0, self.window_start - start)
        self._x = self._x[:, keep_from:]
        self._y = self._y[:, self.k1 :]
        return loss

    def _check(self, x: Tensor, y: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[0] < 1:
            raise ValueError(f"x_chunk must have shape (B, n, F) with B >= 1, got {_shape(x)}")
        if not x.is_floating_point():
            raise ValueError(f"x_chunk must be a floating-point tensor, got dtype {x.dtype}")
        cells = getattr(self.model, "cells", None)  # a SequenceModel's first layer reads x
        cell = cells[0] if isinstance(cells, nn.ModuleList) else getattr(self.model, "cell", None)
        if isinstance(cell, nn.Module):
            check_input(cell, x, "x_chunk")
        if not isinstance(y, Tensor) or y.dim() < 2 or y.shape[:2] != x.shape[:2]:
            raise ValueError(
                f"y_chunk must have shape (B, n, ...) matching x_chunk's (B, n) = "
                f"{tuple(x.shape[:2])}, got {_shape(y)}"
            )
        if self._x is not None and x.shape[0] != self._x.shape[0]:
            raise ValueError(
                f"the stream has {self._x.shape[0]} parallel sequences; this chunk has {x.shape[0]}"
            )

    def state_dict(self) -> dict[str, Any]:
        """Position, update and skip counts, the carried states and the buffered stream."""
        return {
            "position": self.position,
            "updates": self.updates,
            "skipped": self.skipped,
            "state": self.state,
            "start": self._start,
            "x": self._x,
            "y": self._y,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (the model and optimizer separately)."""
        self.position, self.updates = int(state["position"]), int(state["updates"])
        self.skipped = int(state.get("skipped", 0))  # a state saved before skipping: none
        self.state, self._start = state["state"], state["start"]
        self._x, self._y = state["x"], state["y"]


def _finite_gradients(params: list[nn.Parameter]) -> bool:
    """Whether every gradient is finite (one check on the host for all of them)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    device = grads[0].device
    return bool(torch.stack([torch.isfinite(g).all().to(device) for g in grads]).all())


def _shape(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__
