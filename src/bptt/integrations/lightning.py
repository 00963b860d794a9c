"""Lightning: bptt's gradient monitor and clip policies as a callback.

Lightning calls :meth:`GradientCallback.on_before_optimizer_step` once per optimizer
step, after gradient accumulation and AMP unscaling and before its own clipping (its
documented order), so the monitor sees the gradient the optimizer would use and the
policy clips it there. Leave the Trainer's ``gradient_clip_val`` unset: the policy
replaces it (AutoClip, ZClip and the others, which Lightning does not have).

    trainer = lightning.Trainer(callbacks=[GradientCallback(clip=Percentile(10))])

Each step logs ``bptt/grad_norm`` (before clipping), ``bptt/clip_threshold``,
``bptt/clipped``, ``bptt/loss_spike``, ``bptt/grad_spike`` and ``bptt/nonfinite``
through the module's logger; :attr:`GradientCallback.rows` keeps every step's full
monitor row (per-parameter norms, z-scores). The monitor's and the policy's state go
into Lightning's checkpoints, so a resumed fit goes on with the same statistics.
"""

from __future__ import annotations

from typing import Any

try:
    import lightning.pytorch as pl
except ImportError as err:  # the extra is optional
    raise ImportError(
        "bptt.integrations.lightning needs Lightning: pip install 'bptt[lightning]'"
    ) from err

import torch

from bptt.clip import ClipPolicy
from bptt.diagnose import Monitor

__all__ = ["GradientCallback"]

LOGGED = ("grad_norm", "clip_threshold", "clipped", "loss_spike", "grad_spike", "nonfinite")


class GradientCallback(pl.Callback):
    """Monitor and clip the gradient at every optimizer step of a Lightning fit.

    Args:
        clip: a :class:`bptt.clip.ClipPolicy` (``Fixed``, ``Percentile``, ``ZScore``,
            ...), or None to only monitor.
        monitor: keep the :class:`bptt.diagnose.Monitor` (norms per parameter, spikes,
            non-finite values); False logs only the clip policy's numbers.
        keep_rows: keep every step's monitor row in :attr:`rows` (memory grows with
            the steps; the logger has the numbers either way).

    Attributes:
        rows: the monitor's row of every optimizer step (with ``keep_rows``).
    """

    def __init__(
        self, clip: ClipPolicy | None = None, monitor: bool = True, keep_rows: bool = True
    ):
        super().__init__()
        if clip is not None and not isinstance(clip, ClipPolicy):
            raise TypeError(f"clip must be a bptt.clip policy or None, got {type(clip).__name__}")
        self.clip = clip
        self.use_monitor = bool(monitor)
        self.keep_rows = bool(keep_rows)
        self.monitor: Monitor | None = None
        self.rows: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._pending_state: dict[str, Any] | None = None

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss) -> None:
        self._losses.append(float(loss.detach()))

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        step = trainer.global_step + 1
        # the mean of the accumulated micro-batches' losses: what this step optimised
        loss = sum(self._losses) / len(self._losses) if self._losses else float("nan")
        self._losses = []
        row: dict[str, Any] = {}
        if self.use_monitor:
            if self.monitor is None:
                self.monitor = Monitor(pl_module)
                if self._pending_state is not None:
                    self.monitor.load_state_dict(self._pending_state)
                    self._pending_state = None
            row = self.monitor.step(step, loss)
        if self.clip is not None:
            norm = self.clip(p for p in pl_module.parameters() if p.grad is not None)
            row.setdefault("grad_norm", float(norm))
            row["clip_threshold"] = float(self.clip.threshold)
            row["clipped"] = bool(self.clip.clipped)
        if self.keep_rows:
            self.rows.append(row)
        logged = {f"bptt/{k}": float(row[k]) for k in LOGGED if row.get(k) is not None}
        if logged:
            pl_module.log_dict(logged, on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.clip is not None:
            state["clip"] = self.clip.state_dict()
        if self.monitor is not None:
            state["monitor"] = self.monitor.state_dict()
        elif self._pending_state is not None:
            state["monitor"] = self._pending_state
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.clip is not None and "clip" in state_dict:
            self.clip.load_state_dict(state_dict["clip"])
        if "monitor" in state_dict:
            if self.monitor is not None:
                self.monitor.load_state_dict(state_dict["monitor"])
            else:  # the monitor is made with the module, at the first step
                self._pending_state = state_dict["monitor"]
