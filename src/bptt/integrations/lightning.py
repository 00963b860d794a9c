"""Lightning: bptt's gradient monitor and clip policies as a callback, and truncated
backprop through time over streamed chunks (:class:`TruncatedBPTTModule`).

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

With ``diagnose_every=N`` it also runs :func:`bptt.diagnose.diagnose` every N optimizer
steps on that step's batch, under the callback's ``loss_fn``, and logs each recurrent
layer's numbers:

    GradientCallback(diagnose_every=100, loss_fn=torch.nn.functional.mse_loss)

The module's ``forward(x)`` is what is diagnosed, as ``loss_fn(module(x), y)``; x and
y come from the batch: ``module.diagnose_batch(batch) -> (x, y)`` where the module
defines it, else the batch itself, which must then be ``(x, y)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, cast

try:
    import lightning.pytorch as pl
except ImportError as err:  # the extra is optional
    raise ImportError(
        "bptt.integrations.lightning needs Lightning: pip install 'bptt[lightning]'"
    ) from err

import torch

from bptt import _checks
from bptt.clip import ClipPolicy
from bptt.diagnose import Diagnosis, Monitor, diagnose
from bptt.model import SequenceModel
from bptt.tbptt import TBPTT

__all__ = ["VERDICT_CODES", "GradientCallback", "TruncatedBPTTModule"]

LOGGED = ("grad_norm", "clip_threshold", "clipped", "loss_spike", "grad_spike", "nonfinite")
# how a logged verdict reads: bptt/diagnose/<layer>/verdict is its index here
VERDICT_CODES = ("healthy", "vanishing", "exploding")


class GradientCallback(pl.Callback):
    """Monitor and clip the gradient at every optimizer step of a Lightning fit.

    Args:
        clip: a :class:`bptt.clip.ClipPolicy` (``Fixed``, ``Percentile``, ``ZScore``,
            ...), or None to only monitor.
        monitor: keep the :class:`bptt.diagnose.Monitor` (norms per parameter, spikes,
            non-finite values); False logs only the clip policy's numbers.
        keep_rows: keep every step's monitor row in :attr:`rows` (memory grows with
            the steps; the logger has the numbers either way).
        diagnose_every: run :func:`bptt.diagnose.diagnose` every this many optimizer
            steps (an integer >= 1; None: never), on the step's batch, before the
            optimizer steps (the model, its ``.grad``, mode and random generators are
            left as they were). Each recurrent layer's numbers are logged as
            ``bptt/diagnose/<layer>/gamma``, ``.../horizon`` (where finite) and
            ``.../verdict`` (the index in :data:`VERDICT_CODES`: 0 healthy, 1
            vanishing, 2 exploding), the layer named as in
            :attr:`bptt.diagnose.Diagnosis.layers` with spaces as ``_``
            (``lstm_layer_1``); the whole model's as ``bptt/diagnose/verdict``.
        loss_fn: the loss of the diagnosis, ``loss_fn(module(x), y) -> scalar``; None:
            the module's output projected on a fixed random unit vector (y unused).
            x and y come from ``module.diagnose_batch(batch)`` where the module
            defines it, else from the batch itself, which must be ``(x, y)``.

    Attributes:
        rows: the monitor's row of every optimizer step (with ``keep_rows``).
        diagnoses: ``(step, Diagnosis)`` for every diagnosis made.

    Raises:
        TypeError: ``clip`` is not a policy, ``diagnose_every`` not an integer,
            ``loss_fn`` not callable.
        ValueError: ``diagnose_every`` below 1, or ``loss_fn`` without it.
    """

    def __init__(
        self,
        clip: ClipPolicy | None = None,
        monitor: bool = True,
        keep_rows: bool = True,
        *,
        diagnose_every: int | None = None,
        loss_fn: Callable[..., torch.Tensor] | None = None,
    ):
        super().__init__()
        if clip is not None and not isinstance(clip, ClipPolicy):
            raise TypeError(f"clip must be a bptt.clip policy or None, got {type(clip).__name__}")
        if diagnose_every is not None:
            diagnose_every = _checks.integer("diagnose_every", diagnose_every, 1)
        if loss_fn is not None:
            _checks.function("loss_fn", loss_fn, "loss_fn(module(x), y) -> scalar")
            if diagnose_every is None:
                raise ValueError("loss_fn is the diagnosis's loss: give diagnose_every too")
        self.diagnose_every = diagnose_every
        self.loss_fn = loss_fn
        self.diagnoses: list[tuple[int, Diagnosis]] = []
        self._batch: Any = None
        self.clip = clip
        self.use_monitor = bool(monitor)
        self.keep_rows = bool(keep_rows)
        self.monitor: Monitor | None = None
        self.rows: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._pending_state: dict[str, Any] | None = None

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss) -> None:
        self._losses.append(float(loss.detach()))

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.diagnose_every is not None:
            self._batch = batch  # the step's (last micro-)batch, for the diagnosis

    def _diagnose(self, step: int, pl_module: pl.LightningModule) -> None:
        """:func:`bptt.diagnose.diagnose` on the kept batch, its numbers logged."""
        hook = getattr(pl_module, "diagnose_batch", None)
        pair = hook(self._batch) if callable(hook) else self._batch
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(
                "GradientCallback(diagnose_every=...) needs (x, y) from the batch: got "
                f"{_checks.shown(pair)}; give the module diagnose_batch(batch) -> (x, y)"
            )
        x, y = pair
        if self.loss_fn is None:
            found = diagnose(pl_module, x)
        else:
            found = diagnose(pl_module, x, y=y, loss_fn=self.loss_fn)
        self.diagnoses.append((step, found))
        logged = {"bptt/diagnose/verdict": float(VERDICT_CODES.index(found.verdict))}
        # each layer's numbers; a diagnosis of one cell (no layers) has its own
        parts = [(f"/{(p.name or '').replace(' ', '_')}", p) for p in found.layers] or [("", found)]
        for suffix, layer in parts:
            key = f"bptt/diagnose{suffix}"
            logged[f"{key}/verdict"] = float(VERDICT_CODES.index(layer.verdict))
            for number in ("gamma", "horizon"):
                value = layer.numbers.get(number)
                if value is not None and math.isfinite(value):
                    logged[f"{key}/{number}"] = float(value)
        pl_module.log_dict(logged, on_step=True, on_epoch=False)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        step = trainer.global_step + 1
        if self.diagnose_every is not None and step % self.diagnose_every == 0:
            self._diagnose(step, pl_module)
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


class TruncatedBPTTModule(pl.LightningModule):
    """Truncated backprop through time, TBPTT(k1, k2), as a LightningModule: Lightning
    2.0 removed its own (``truncated_bptt_steps``), and the manual recipe it suggests
    keeps a whole window in memory.

    The train dataloader yields consecutive chunks ``(x (B, n, F), y (B, n, ...))`` of
    one stream (in order: no shuffling; ``batch_size=None`` over a dataset of chunks),
    each epoch one pass from the stream's start (batch 0 starts a fresh state).
    Each chunk is fed to a :class:`bptt.TBPTT`, which carries the hidden state across
    chunks and makes an update every k1 steps, each backpropagating k2 steps; it keeps
    only the steps a later update still needs, so memory is O((k2 + n) B H) whatever
    the stream's length. Updates use manual optimization (several per chunk, or none),
    so the optimizer hooks, :class:`GradientCallback` among them, run at every update;
    leave the Trainer's ``gradient_clip_val`` and ``accumulate_grad_batches`` unset.
    Nothing of the stream's state is checkpointed: a fit resumed from a checkpoint
    starts the next epoch from a fresh state, as an uninterrupted fit does (Lightning
    2.6 resumes a fit that stopped inside an epoch at the next epoch's first chunk;
    tested against the plain loop). Should a resumed fit ever start inside an epoch,
    the state starts fresh there, with a warning: no saved state could be trusted to
    match the chunk the loader gives.

    Args:
        model: a :class:`bptt.SequenceModel` with ``readout="all"``.
        k1: steps between updates (>= 1).
        k2: steps each update backpropagates (>= k1).
        loss_fn: ``loss_fn(predictions (B, k1, O), targets (B, k1, ...)) -> scalar``.
        lr: Adam's learning rate, for the default :meth:`configure_optimizers`.

    Attributes:
        tbptt: the :class:`bptt.TBPTT` of the current epoch.

    Logs ``tbptt/loss`` (the mean of the chunk's updates) and ``tbptt/updates``.

    Example:
        >>> import torch, bptt
        >>> model = bptt.SequenceModel(bptt.cells.GRUCell(1, 8), 1, readout="all")
        >>> module = TruncatedBPTTModule(model, 5, 10, torch.nn.functional.mse_loss)
        >>> module.tbptt.k2
        10
    """

    def __init__(
        self,
        model: SequenceModel,
        k1: int,
        k2: int,
        loss_fn: Any,
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        self.model, self.k1, self.k2, self.loss_fn, self.lr = model, k1, k2, loss_fn, lr
        self.automatic_optimization = False  # an update every k1 steps, not per batch
        self._warned = False
        self.tbptt = TBPTT(model, k1, k2, loss_fn, optimizer=None)  # checks k1, k2, model

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """The model over x (B, T, F): (predictions (B, T, O), final state)."""
        return self.model(x, state=state)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam at ``lr``; override for another optimizer."""
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """Feed one chunk; make the updates it completes."""
        x, y = batch
        if batch_idx == 0 and self.tbptt.position:
            # a new epoch: the dataloader starts the stream again, and so does the state
            self.tbptt = TBPTT(self.model, self.k1, self.k2, self.loss_fn, optimizer=None)
        elif batch_idx and not self.tbptt.position and not self._warned:
            # a fit resumed inside an epoch: whichever chunk the loader gives, no saved
            # state could be trusted to match it
            warnings.warn(
                f"resumed at batch {batch_idx} of an epoch: the stream's hidden state "
                "starts fresh here (resume from the end of an epoch to continue exactly)",
                stacklevel=2,
            )
            self._warned = True
        # configure_optimizers returns one optimizer
        optimizer = cast("pl.core.optimizer.LightningOptimizer", self.optimizers())
        losses = []
        for loss in self.tbptt.losses(x, y):
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()  # Lightning runs on_before_optimizer_step inside
            losses.append(loss.detach())
        if losses:
            self.log("tbptt/loss", torch.stack(losses).mean(), on_step=True, on_epoch=False)
        self.log("tbptt/updates", float(self.tbptt.updates), on_step=True, on_epoch=False)
