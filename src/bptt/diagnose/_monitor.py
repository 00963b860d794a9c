"""The Monitor: what a training loop should know about its gradients at every step."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from bptt import _checks
from bptt._torch_compat import foreach_norm
from bptt.diagnose._spikes import SpikeDetector
from bptt.taps import RecordNorms

__all__ = ["Monitor", "write_scalars"]


def write_scalars(writer: Any, row: dict[str, Any], step: int) -> None:
    """Write the finite numbers of a row as scalars named by their keys (booleans as 0
    and 1; text, None, NaN and inf skipped: TensorBoard plots no gaps)."""
    for key, value in row.items():
        if key == "step" or isinstance(value, str) or value is None:
            continue
        number = float(value)
        if math.isfinite(number):
            writer.add_scalar(key, number, step)


class Monitor:
    """Per-step gradient norms, spike and non-finite detectors, as flat dicts.

    Two lines in any training loop::

        monitor = Monitor(model)                       # before the loop
        row = monitor.step(step, loss)                 # after backward, before clipping

    To also say at which time step a non-finite hidden-state gradient appeared, either
    give ``rerun=``, a callable that repeats this step's forward and backward with the
    taps it is given (``lambda taps: loss_fn(model(x, taps=taps)[0], y).backward()``),
    which the monitor calls only on a non-finite step, so healthy steps pay nothing;
    or construct it with ``locate_steps=True`` and pass ``taps=monitor.taps`` to every
    forward (a :class:`bptt.SequenceModel` or :func:`bptt.unroll`), which records the
    hidden-state gradient's norm at every step (about 1% of a step's time).

    The row has stable keys: ``step``, ``loss``, ``grad_norm`` (the global norm before
    clipping, accumulated in float64), ``grad_norm/<parameter name>`` for every
    parameter, ``loss_z`` and ``grad_z`` (robust z-scores, NaN while the window
    fills), ``loss_spike`` and
    ``grad_spike``, ``nonfinite`` (the loss or a gradient is NaN or inf),
    ``nonfinite_param`` (the first parameter, in ``named_parameters`` order, with a
    non-finite gradient; "" if none) and ``nonfinite_step`` (the time step t at which
    the backward pass first met a non-finite dL/ds_t, i.e. the largest such t; None
    if none or not known). Pass a clip policy as ``clip=`` after it ran to add
    ``clip_threshold`` and ``clipped``.

    With ``writer=`` (a ``torch.utils.tensorboard.SummaryWriter``, or anything with
    its ``add_scalar(tag, value, step)``), every row's finite numbers are also written
    as TensorBoard scalars under their row names (``loss``, ``grad_norm``,
    ``grad_norm/<parameter>``, ``loss_z``, ``grad_spike``, ``clip_threshold``, ...).

    Args:
        model: the module whose parameters' gradients are watched.
        window, z, min_history, floor: the spike detectors' settings
            (:class:`SpikeDetector`), the same for the loss and the gradient norm.
        locate_steps: provide the always-on tap that finds the non-finite time step.
        writer: where to write each row as scalars (None: nowhere).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``writer`` has no ``add_scalar``.
        TypeError, ValueError: a detector setting is out of range (named).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        window: int = 50,
        z: float = 6.0,
        min_history: int = 10,
        floor: float = 0.05,
        locate_steps: bool = False,
        writer: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model must be a torch.nn.Module whose gradients are watched, got "
                f"{_checks.shown(model)}"
            )
        locate_steps = _checks.flag("locate_steps", locate_steps)
        if writer is not None and not callable(getattr(writer, "add_scalar", None)):
            raise TypeError(
                f"writer must have add_scalar(tag, value, step), like SummaryWriter; "
                f"got {type(writer).__name__}"
            )
        self.writer = writer
        self.names, self.parameters = [], []
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                self.names.append(name)
                self.parameters.append(parameter)
        self.loss_spikes = SpikeDetector(window, z, min_history, floor)
        self.grad_spikes = SpikeDetector(window, z, min_history, floor)
        self._record = RecordNorms() if locate_steps else None
        self.spikes = 0
        self.nonfinite = 0

    @property
    def taps(self) -> tuple:
        """The taps to pass to the model's forward (empty if ``locate_steps`` is False)."""
        return () if self._record is None else (self._record,)

    def step(
        self,
        step: int,
        loss: Tensor | float,
        clip: Any = None,
        rerun: Callable[[tuple], None] | None = None,
    ) -> dict[str, Any]:
        """Measure this step's gradients (call after backward, before clipping).

        Args:
            step: the training step, an integer >= 0 (the row's ``step``).
            loss: this step's loss: a number or a tensor of one value (a loss per
                sample is refused: reduce it first).
            clip: the clip policy that ran on this step, or None.
            rerun: (optional) repeats the step's forward and backward with the given
                taps; it is called only when the step is non-finite, to locate it in
                time, and leaves the parameters' gradients as the repeat makes them.

        Raises:
            TypeError: ``loss`` is not a number or a real tensor, ``step`` not an
                integer, ``rerun`` not callable or ``clip`` not a policy.
            ValueError: ``loss`` holds more than one value, ``step`` is negative.
        """
        step = _checks.integer("step", step, 0)
        loss_value = _checks.scalar("loss", loss)
        if rerun is not None:
            _checks.function("rerun", rerun, "rerun(taps)")
        if clip is not None and not (hasattr(clip, "threshold") and hasattr(clip, "clipped")):
            raise TypeError(
                f"clip must be a clip policy (with threshold and clipped), got "
                f"{_checks.shown(clip)}"
            )
        norms = self._parameter_norms()
        total = math.sqrt(sum(n * n for n in norms)) if norms else 0.0
        nonfinite = not (math.isfinite(loss_value) and math.isfinite(total))
        loss_spike, loss_z = self.loss_spikes.update(loss_value)
        grad_spike, grad_z = self.grad_spikes.update(total)
        self.spikes += loss_spike or grad_spike
        self.nonfinite += nonfinite
        row: dict[str, Any] = {"step": step, "loss": loss_value, "grad_norm": total}
        row.update({f"grad_norm/{n}": v for n, v in zip(self.names, norms, strict=True)})
        row.update(
            {
                "loss_z": loss_z,
                "grad_z": grad_z,
                "loss_spike": loss_spike,
                "grad_spike": grad_spike,
                "nonfinite": nonfinite,
                "nonfinite_param": next(
                    (n for n, v in zip(self.names, norms, strict=True) if not math.isfinite(v)), ""
                ),
                "nonfinite_step": self._nonfinite_step(rerun) if nonfinite else None,
            }
        )
        if clip is not None:
            row["clip_threshold"] = clip.threshold
            row["clipped"] = clip.clipped
        if self.writer is not None:
            write_scalars(self.writer, row, step)
        return row

    def _parameter_norms(self) -> list[float]:
        """Each gradient's norm, accumulated in float64: a float32 norm overflows beyond
        1.8e19 and would call a finite gradient non-finite."""
        grads = [p.grad for p in self.parameters]
        present = [g for g in grads if g is not None]
        norms = foreach_norm(present, 2, dtype=torch.float64) if present else []
        values = iter(torch.stack([n.cpu() for n in norms]).tolist() if present else [])
        return [next(values) if g is not None else 0.0 for g in grads]

    def _nonfinite_step(self, rerun: Callable[[tuple], None] | None) -> int | None:
        record = self._record
        if rerun is not None:
            record = RecordNorms()
            rerun((record,))
        if record is None:
            return None
        try:
            norms = record.norms  # (B, T)
        except RuntimeError:  # the taps were not used in this backward
            return None
        bad = (~torch.isfinite(norms)).any(0).nonzero()
        return int(bad[-1]) if bad.numel() else None

    def summary(self) -> dict[str, int]:
        """Counts over the run so far: ``spikes`` and ``nonfinite`` steps."""
        return {"spikes": self.spikes, "nonfinite": self.nonfinite}

    def state_dict(self) -> dict[str, Any]:
        """The detectors' windows and the counts."""
        return {
            "loss": self.loss_spikes.state_dict(),
            "grad": self.grad_spikes.state_dict(),
            "spikes": self.spikes,
            "nonfinite": self.nonfinite,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.loss_spikes.load_state_dict(state["loss"])
        self.grad_spikes.load_state_dict(state["grad"])
        self.spikes, self.nonfinite = int(state["spikes"]), int(state["nonfinite"])
