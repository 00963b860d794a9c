"""What a run writes while it trains: a metrics row every ``log_every`` steps (and
TensorBoard's scalars of it), and a diagnosis every ``diagnose_every`` steps into
``diagnostics.jsonl`` (and TensorBoard's figure of it). Nothing without a run
directory."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from bptt.diagnose import diagnose, write_scalars
from bptt.run.training._build import evaluation_mode, json_safe
from bptt.run.training._config import TrainConfig
from bptt.run.training._fields import ConfigError
from bptt.run.training._rundir import RunDirectory

__all__ = ["RunLog"]


class RunLog:
    """The run directory's metrics and diagnoses, and the TensorBoard writer.

    Args:
        config: the run's configuration (``log_every``, ``diagnose_every``,
            ``tensorboard``).
        run_dir: where to write (None: nothing is written).
        probe: the diagnoses' probe batch, (B, T, input_size).
        dependency: how far back the task depends (the diagnoses' length).
    """

    def __init__(
        self, config: TrainConfig, run_dir: RunDirectory | None, probe: Tensor, dependency: int
    ) -> None:
        self.config, self.run_dir = config, run_dir
        self.probe, self.dependency = probe, dependency
        self.writer = _tensorboard_writer(config, run_dir)

    def due(self, step: int, last: bool) -> bool:
        """Whether step ``step`` writes a metrics row."""
        return self.run_dir is not None and (step % self.config.log_every == 0 or last)

    def write_row(self, row: dict[str, Any]) -> None:
        """One metrics row (``row["step"]`` its step), and its TensorBoard scalars."""
        assert self.run_dir is not None  # due() says no without a run directory
        self.run_dir.log(row)
        if self.writer is not None:
            write_scalars(self.writer, row, row["step"])

    def diagnose_if_due(self, model: nn.Module, step: int) -> None:
        """Every ``diagnose_every`` steps: the model's diagnosis on the probe, in eval
        mode, appended to ``diagnostics.jsonl`` (and drawn in TensorBoard)."""
        every = self.config.diagnose_every
        if self.run_dir is None or not every or step % every:
            return
        with evaluation_mode(model):
            found = diagnose(model, self.probe, self.dependency)
        record = json_safe({"step": step, **found.to_dict()})
        self.run_dir.append_json("diagnostics.jsonl", record)
        if self.writer is not None:
            _write_distance_figure(self.writer, found, step)

    def close(self) -> None:
        """Flush and close the TensorBoard event file (if any)."""
        if self.writer is not None:
            self.writer.close()


def _tensorboard_writer(config: TrainConfig, run_dir: RunDirectory | None) -> Any:
    """A SummaryWriter on RUN_DIR/tensorboard when the config asks for one."""
    if not config.tensorboard:
        return None
    if run_dir is None:
        raise ConfigError("tensorboard", "needs a run directory: give --out")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        message = "needs the tensorboard package: pip install 'bptt[tensorboard]'"
        raise ConfigError("tensorboard", message) from None
    return SummaryWriter(str(run_dir.path / "tensorboard"), flush_secs=5)


def _write_distance_figure(writer: Any, found: Any, step: int) -> None:
    """A diagnosis's gradient by distance as a TensorBoard figure."""
    from bptt.run._figures import distance_curves

    numbers = found.numbers
    figure = distance_curves(
        [(f"step {step}: {found.verdict}", found.to_dict()["norms"])],
        dependency=numbers.get("dependency_length"),
    )
    writer.add_figure("gradient_by_distance", figure, step)
