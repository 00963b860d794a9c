"""The training loop of one run, with checkpoints, roll-backs and resumption.

Everything that differs between runs was chosen when the run was built: the batch
source (sequences or a stream, :mod:`bptt.run.training._batches`) and the step rule
(first order or Hessian-free, :mod:`bptt.run.training._steps`). The loop itself is the
same for all, and composed of three parts: the scores (:class:`Evaluation`: test,
validation, the best model), what it writes while it trains (:class:`RunLog`: metrics
rows, TensorBoard, diagnostics.jsonl) and its recovery (:class:`Recovery`: checkpoints,
the non-finite streak, roll-backs).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bptt.diagnose import Monitor, diagnose, judge_run
from bptt.run.training._batches import make_batches
from bptt.run.training._build import (
    evaluation_mode,
    initial_model,
    json_safe,
    make_clip_policy,
    make_optimizer,
    seeds,
    step_taps,
    where_nonfinite,
)
from bptt.run.training._checkpoint import Checkpoints
from bptt.run.training._config import TrainConfig, as_before
from bptt.run.training._counters import RunCounters
from bptt.run.training._evaluation import Evaluation
from bptt.run.training._fields import ConfigError
from bptt.run.training._recovery import Recovery
from bptt.run.training._remedies import remedies_for
from bptt.run.training._rundir import RunDirectory, RunDirectoryError
from bptt.run.training._runlog import RunLog
from bptt.run.training._steps import StepReport, make_step_rule
from bptt.tasks import make_task

__all__ = ["NonFiniteError", "Run", "RunStopped"]

_FORMAT = 1  # checkpoint layout version
# config fields a resumed run may change: where it is, how long it may take (the time
# limit decides when a run stops, never what a step computes) and how often the clock
# checkpoints it (a roll-back goes to the last checkpoint of checkpoint_every only)
NOT_COMPARED = ("out", "time_limit_s", "checkpoint_every_s")


def _may_differ(config: TrainConfig) -> tuple[str, ...]:
    """Fields a checkpoint's config may differ in: the output directory, and the step
    budget unless the learning rate is scheduled over it (then the steps taken so far
    depended on it)."""
    return NOT_COMPARED + (("steps",) if config.schedule.kind == "constant" else ())


class NonFiniteError(RuntimeError):
    """A step's loss or gradient was NaN or inf and the config says ``nonfinite = "raise"``."""


class RunStopped(RuntimeError):
    """The run stopped before its end because a file of its run directory could not be
    written (a full disk, a directory made read-only); its checkpoints are intact and
    the message says from which step it resumes."""


def _fingerprint(config: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in config.flat().items() if k not in NOT_COMPARED}


class Run:
    """One training run: everything the config describes, stepped until done.

    Args:
        config: the validated configuration.
        run_dir: where to log (None: nothing written).
        on_gradients: optional ``on_gradients(step, model)`` called after each backward,
            before monitoring and clipping (gradient surgery; fault injection in tests).
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: RunDirectory | None,
        on_gradients: Callable[[int, nn.Module], None] | None = None,
    ) -> None:
        self.config, self.run_dir = config, run_dir
        assert config.length is not None  # validation derives it from the task
        self.task = make_task(config.task, config.length)
        _, data_seed, _ = seeds(config.seed)
        self.model = initial_model(config, self.task)
        self.optimizer = make_optimizer(config, self.model)
        self.evaluation = Evaluation(config, self.task)  # before the batches draw
        self.policy = make_clip_policy(config)
        self.monitor = None
        if config.monitor:
            self.monitor = Monitor(self.model, window=config.spike_window, z=config.spike_z)
        self.probe = self.evaluation.x_test[: config.probe_size]
        self.log = RunLog(config, run_dir, self.probe, self.task.dependency_length)
        self.batches = make_batches(config, self.task, self.model, step_taps(config), data_seed)
        self.take_step = make_step_rule(
            config,
            self.task,
            self.model,
            self.optimizer,
            self.batches,
            self.policy,
            self.monitor,
            on_gradients,
        )
        self.recovery = Recovery(config, run_dir)
        self.step = 0
        self.counters = RunCounters()  # with the record of what the run saw, for its verdict
        self.ended = False  # set by begin() and step_once()
        self._start = time.perf_counter()  # the loop's clock, less the time trained before

    @property
    def checkpoints(self) -> Checkpoints:
        """The run's checkpoints (its :class:`Recovery`'s)."""
        return self.recovery.checkpoints

    def close(self) -> None:
        """Close what the run holds open (its TensorBoard event file)."""
        self.log.close()

    # --- checkpoints -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit for bit: weights, optimizer, clipping and
        monitor state, data position and RNG, counters."""
        return {
            "format": _FORMAT,
            "config": _fingerprint(self.config),
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "policy": self.policy.state_dict(),
            "monitor": None if self.monitor is None else self.monitor.state_dict(),
            "batches": self.batches.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "counters": self.counters.state_dict(),
            "record": self.counters.record_state(),
            "best": self.evaluation.best,
            "threads": torch.get_num_threads(),  # a product may round otherwise on another
        }

    def load_state_dict(self, state: dict[str, Any], *, keep_counters: bool = False) -> None:
        """Continue from a checkpoint of the same configuration.

        Raises:
            ConfigError: the checkpoint belongs to another configuration or format.
        """
        if state.get("format") != _FORMAT:
            raise ConfigError("resume", f"checkpoint format {state.get('format')} is not {_FORMAT}")
        # a field added since the checkpoint was written had its default then
        differ = self.config.differing_fields(state["config"], ignore=_may_differ(self.config))
        if differ:
            key = differ[0]
            saved = state["config"]
            then = {**TrainConfig.flat_defaults(), **as_before(saved)}  # as it was made
            theirs = saved[key] if key in saved else then.get(key)
            raise ConfigError(
                "resume",
                f"the checkpoint belongs to another configuration: {key} is "
                f"{theirs!r} there and {self.config.flat().get(key)!r} here",
            )
        self.step = int(state["step"])
        if self.config.threads == 0 and state.get("threads"):  # the count it began with
            torch.set_num_threads(int(state["threads"]))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.policy.load_state_dict(state["policy"])
        if self.monitor is not None:
            self.monitor.load_state_dict(state["monitor"])
        self.batches.load_state_dict(state["batches"])
        torch.set_rng_state(state["torch_rng"])
        if self.evaluation.validation is not None and not keep_counters:
            self.evaluation.best = state.get("best")  # a roll-back keeps the best seen since
        if not keep_counters:
            # an older checkpoint has no record
            self.counters = RunCounters.from_state(state["counters"], state.get("record"))

    def _checkpoint(self, scheduled: bool = True) -> None:
        """Save a checkpoint of this step (see :meth:`Recovery.save`)."""
        self.recovery.save(self.step, self.state_dict, self.model, self.counters, scheduled)

    def _roll_back(self) -> None:
        """Back to the last checkpoint, with the learning rate lowered (HF: damping raised)."""
        state = self.checkpoints.latest_in_memory(map_location=self.config.device)
        assert state is not None  # called only once a checkpoint is kept
        self.load_state_dict(state, keep_counters=True)
        self.checkpoints.drop_after(self.step)
        self.counters.rollbacks += 1
        self.counters.streak = 0
        self.take_step.after_rollback(self.counters.rollbacks)

    # --- the loop --------------------------------------------------------------------

    def run(self, advance: Callable[..., None]) -> dict[str, Any]:
        """Train from ``self.step`` to the end; returns the summary.

        ``advance(step, loss, status=None)`` is called after every step, and with a
        status when the run does other long work (the final diagnosis).

        Raises:
            RunStopped: a file of the run directory could not be written.
            NonFiniteError: a non-finite step with ``nonfinite = "raise"``.
        """
        try:
            return self._run(advance)
        except RunDirectoryError as err:
            raise RunStopped(self.stopped_message(err)) from err
        finally:
            self.close()  # flushes the event file

    def stopped_message(self, err: RunDirectoryError) -> str:
        """One line: what failed, where the run stopped, and how to go on."""
        message = f"{err}; the run stopped at step {self.step}"
        step = self.checkpoints.newest_intact_step()
        assert self.run_dir is not None  # only a run directory raises RunDirectoryError
        resume = f"`bptt train --resume {self.run_dir.path}`"
        if step is None:
            again = f"`bptt train --resume {self.run_dir.path} --restart`"
            return f"{message} with no checkpoint written: {again} trains it again from step 0"
        return (
            f"{message}; its last checkpoint is step {step}: make room, then resume with {resume}"
        )

    def _run(self, advance: Callable[..., None]) -> dict[str, Any]:
        self.begin()
        while not self.ended:
            self.step_once(advance)
        return self.finish(advance)

    # The loop in three parts, so that a driver of several runs in lockstep
    # (:mod:`bptt.run.training._stacked`) can give each step its gradients: begin, then
    # step_once until ``ended``, then finish.

    def begin(self) -> None:
        """Start (or go on with) the loop: the wall clock, and a first checkpoint."""
        config, counters = self.config, self.counters
        self._start = time.perf_counter() - counters.wall_s
        self.recovery.saved_at = time.perf_counter()
        if config.checkpoint_every > 0 and self.step == 0:
            self._checkpoint()
        self.ended = self.step >= config.steps or (
            (config.stop_when_solved and counters.solved_step is not None)
            or (0 < config.time_limit_s <= counters.wall_s)
        )  # a run resumed after it had already ended (solved, or out of time)

    def step_once(self, advance: Callable[..., None], computed: Any = None) -> None:
        """Take the next step, evaluate, log and checkpoint as due; sets ``ended``.

        ``computed`` is the step's ``(loss, rerun)`` with the gradients already in the
        parameters' ``.grad`` (the stacked driver's); None: the step rule computes them.

        Raises:
            RunDirectoryError: a file of the run directory could not be written.
            NonFiniteError: a non-finite step with ``nonfinite = "raise"``.
        """
        config = self.config
        step = self.step + 1
        report = self.take_step(step, self.counters, computed)
        self._count(step, report)
        stop = not report.finite and config.nonfinite == "raise"
        out_of_time = 0 < config.time_limit_s <= time.perf_counter() - self._start
        last = step == config.steps or stop or out_of_time
        evaluated = self.evaluation.due(step, last)
        if evaluated and self._solved_now(step):
            last = last or config.stop_when_solved
        self.counters.wall_s = time.perf_counter() - self._start
        if self.log.due(step, last):
            self.log.write_row(self._row(step, report, evaluated))
        if stop:
            self._stop(step, report.loss, report.grad_norm, report.watched)
        self.log.diagnose_if_due(self.model, step)
        advance(step, report.loss)
        if self.recovery.should_roll_back(self.counters):
            self._roll_back()
            return
        due, scheduled = self.recovery.due(step, last, self.counters)
        if due:
            self._checkpoint(scheduled=scheduled)
        self.ended = last or self.step >= config.steps

    def _count(self, step: int, report: StepReport) -> None:
        """The step in the run's record and counters; ``self.step`` moves to it."""
        self.counters.count(step, report.loss, report.grad_norm, report.clipped)
        self.step = step

    def _solved_now(self, step: int) -> bool:
        """Score the model (validation or test set); whether the task is first judged
        solved at this step (then recorded as the run's ``solved_step``)."""
        score = self.evaluation.score(self.model, step, self.counters)
        if self.counters.solved_step is None and self.task.is_solved(score):
            self.counters.solved_step = step
            return True
        return False

    def _row(self, step: int, report: StepReport, evaluated: bool) -> dict[str, Any]:
        """The metrics row of this step: the step's numbers, and the scores where it
        was evaluated (with validation, the test set is scored once, at the end)."""
        counters = self.counters
        tested = evaluated and self.evaluation.validation is None
        row = {
            **report.watched,
            "step": step,
            "loss": report.loss,
            "grad_norm": report.grad_norm,
            "clip_threshold": self.policy.threshold,
            "clipped": report.clipped,
            "nonfinite": not report.finite,
            "lr": self.optimizer.param_groups[0].get("lr"),
            "test_loss": counters.test_loss if tested else None,
            "test_accuracy": counters.test_accuracy if tested else None,
            "wall_s": round(counters.wall_s, 4),
            "rollbacks": counters.rollbacks,
        }
        if self.evaluation.validation is not None:
            row["val_loss"] = counters.val_loss if evaluated else None
            row["val_accuracy"] = counters.val_accuracy if evaluated else None
        return row

    def finish(self, advance: Callable[..., None]) -> dict[str, Any]:
        """The summary (and the final diagnosis), once ``ended``."""
        return self._summary(time.perf_counter() - self._start, advance)

    def _stop(
        self, step: int, loss_value: float, norm_value: float, watched: dict[str, Any]
    ) -> None:
        message = (
            f"step {step}: non-finite loss ({loss_value}) or gradient norm ({norm_value})"
            f'{where_nonfinite(watched)}; set nonfinite = "skip" to skip such steps'
        )
        if self.run_dir is not None:  # the row is logged; the summary says why it ended
            self.run_dir.write_summary(
                {"task": self.config.task, "steps_done": step, "error": message}
            )
        raise NonFiniteError(message)

    def _summary(self, wall: float, advance: Callable[..., None]) -> dict[str, Any]:
        """The outcome: written with the model first, then again with the verdict, so a
        diagnosis that fails or is killed never costs the trained model."""
        # the test set is scored here when validation chose (its model loaded first)
        chosen = self.evaluation.select_best(self.model, self.counters)
        weights_finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        summary = self._outcome(wall, chosen, weights_finite)
        if self.run_dir is not None:
            self.run_dir.save_model(self.model)
            self.run_dir.write_summary(json_safe(summary))
        summary.update(self._judged(summary, weights_finite, advance))
        if self.run_dir is not None:
            self.run_dir.write_summary(json_safe(summary))
        return summary

    def _outcome(self, wall: float, chosen: dict[str, Any], weights_finite: bool) -> dict[str, Any]:
        """What the run reached after ``wall`` seconds of its loop, before its verdict
        (``chosen``: the validation's choice, if any)."""
        config, counters, task = self.config, self.counters, self.task
        test_loss = counters.test_loss
        return {
            "task": config.task,
            "length": config.length,
            "method": config.method,
            "cell": config.cell,
            "hidden": config.hidden,
            "optimizer": config.optimizer.kind,
            "lr": self.take_step.reported_lr,
            "clip": config.clip.kind,
            "clip_norm": getattr(config.clip, "max_norm", None),
            "clip_step_norm": config.clip_step_norm,
            "clipped_steps": counters.clipped_steps,
            "batch_size": config.batch_size,
            "seed": config.seed,
            "steps": config.steps,
            "steps_done": self.step,
            "time_limited": 0 < config.time_limit_s <= wall and self.step < config.steps,
            **(
                {"tbptt_k1": config.tbptt_k1, "tbptt_k2": config.tbptt_k2}
                if config.tbptt_k1
                else {}
            ),
            "metric": task.metric,
            "final_loss": test_loss,
            "accuracy": counters.test_accuracy,  # tasks scored by accuracy
            "train_loss": counters.loss,
            "baseline_loss": task.baseline_loss,
            "solved": task.is_solved(test_loss),
            "solved_step": counters.solved_step,
            **chosen,
            "nonfinite_steps": counters.nonfinite_steps,
            "rollbacks": counters.rollbacks,
            "checkpoint_errors": counters.checkpoint_errors,
            "spikes": None if self.monitor is None else self.monitor.spikes,
            "diverged": not (math.isfinite(test_loss) and weights_finite),
            "verdict": None,  # until the diagnosis has run
            "threads": torch.get_num_threads(),  # results depend on it in the last bits
            "wall_s": round(wall, 3),  # the training loop, evaluations included
        }

    def _judged(
        self, summary: dict[str, Any], weights_finite: bool, advance: Callable[..., None]
    ) -> dict[str, Any]:
        """The run's verdict over what it saw and a probe of its final model (none with
        the monitor off or non-finite weights), with its remedies as commands."""
        config, task, model = self.config, self.task, self.model
        started = time.perf_counter()
        probe = None
        if self.monitor is not None and weights_finite:
            advance(self.step, self.counters.loss, "diagnosing the final model")
            with evaluation_mode(model):
                probe = diagnose(model, self.probe, task.dependency_length)
            advance(self.step, self.counters.loss)  # done: the bar shows the run again
        verdict = judge_run(
            self.counters.record,
            probe,
            final_loss=summary["final_loss"] if weights_finite else math.nan,
            baseline=task.baseline_loss,
            solved=summary["solved"],
            truncation=config.tbptt_k2 or None,
            training_set=task.has_training_set,
        )
        where = None if self.run_dir is None else str(self.run_dir.path)
        return {
            "diverged": verdict.diverged,
            "verdict": verdict.verdict,
            "diagnosis": {
                "reasons": verdict.reasons,
                "history": verdict.history,
                "remedies": remedies_for(verdict, config, where),
                "evidence": json_safe(verdict.evidence),
            },
            "run_record": self.counters.record_state(),
            "probe": None if probe is None else _probe_curves(probe),
            "diagnose_s": round(time.perf_counter() - started, 3),
        }


def _probe_curves(probe: Any) -> dict[str, Any]:
    """The final probe's curves for the report: the norm of dL/ds_{T-1-d} at each
    distance d and the Jacobian's spectral norm at each step (lists of length T); for
    a model of several layers or directions, each one's norms under ``layers`` (its
    name: its list), the worst one's at the top."""
    found = probe.to_dict()
    curves = {"norms": found["norms"], "jacobian": found["jacobian"]}
    if probe.layers:
        curves["layers"] = {layer.name: layer.to_dict()["norms"] for layer in probe.layers}
    return curves
