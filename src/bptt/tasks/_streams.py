"""Tasks that are streams: no sequences, one long input the model reads forever.

A stream task opens a :class:`Stream` that yields the next n steps of B parallel
streams, and evaluates a model on a held-out stream with the state carried across
it. They are trained with :class:`bptt.TBPTT`.
"""

from __future__ import annotations

import math
import sysconfig
from abc import abstractmethod
from pathlib import Path

import torch
from torch import Tensor, nn

from bptt.tasks._base import Task, check_length, resolve_generator

__all__ = [
    "TEXT_FILES",
    "EchoTask",
    "Stream",
    "StreamTask",
    "TextTask",
    "delayed_echo",
    "stdlib_text",
]

IGNORE = -100  # target of a step with nothing to predict (cross_entropy's ignore_index)
_EVAL_CHUNK = 500


class Stream:
    """B parallel streams; :meth:`next` returns their next n steps."""

    def next(self, n: int) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        """The next n steps: x (B, n, F), y (B, n)."""
        raise NotImplementedError

    def state_dict(self) -> dict:  # pragma: no cover - interface
        """Where the stream is (its random generator is the caller's to save)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:  # pragma: no cover - interface
        """Continue from a :meth:`state_dict`."""
        raise NotImplementedError


class StreamTask(Task):
    """A task read as a stream (``stream = True``): see :mod:`bptt.tasks._streams`."""

    stream = True
    readout = "all"

    @abstractmethod
    def open_stream(
        self, batch_size: int, generator: torch.Generator, *, device=None, dtype=torch.float32
    ) -> Stream:
        """The training stream: B parallel streams drawn from ``generator``."""

    @abstractmethod
    def evaluate(self, model: nn.Module, *, device=None, dtype=torch.float32) -> float:
        """The test metric on the held-out stream, the state carried across it."""

    def sample(self, batch_size, generator, *, device=None, dtype=torch.float32):
        """A (B, length) slice of a fresh training stream (for probes and diagnoses)."""
        return self.open_stream(batch_size, generator, device=device, dtype=dtype).next(self.length)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy over the steps that have a target (B, n, C) vs (B, n); a window
        with none (the first of a delayed echo) has loss 0 and no gradient, not NaN."""
        if not bool((target != IGNORE).any()):
            return prediction.sum() * 0.0
        return nn.functional.cross_entropy(
            prediction.flatten(0, 1), target.flatten(), ignore_index=IGNORE
        )

    @torch.no_grad()
    def _stream_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
        """Mean cross-entropy (nats) and accuracy over a long stream, in chunks."""
        state, total, correct, count = None, 0.0, 0, 0
        for start in range(0, x.shape[1], _EVAL_CHUNK):
            xs, ys = x[:, start : start + _EVAL_CHUNK], y[:, start : start + _EVAL_CHUNK]
            prediction, state = model(xs, state=state)
            keep = ys != IGNORE
            total += nn.functional.cross_entropy(prediction[keep], ys[keep], reduction="sum").item()
            correct += (prediction[keep].argmax(-1) == ys[keep]).sum().item()
            count += int(keep.sum())
        return total / count, correct / count


class _EchoStream(Stream):
    def __init__(self, delay: int, symbols: int, batch: int, gen: torch.Generator, device, dtype):
        self.delay, self.symbols, self.gen = delay, symbols, gen
        self.device, self.dtype = device, dtype
        self.history = torch.full((batch, 0), IGNORE, dtype=torch.long)

    def next(self, n: int) -> tuple[Tensor, Tensor]:
        fresh = torch.randint(0, self.symbols, (self.history.shape[0], n), generator=self.gen)
        seen = torch.cat([self.history, fresh], dim=1)
        padded = torch.cat(
            [torch.full((seen.shape[0], self.delay), IGNORE, dtype=torch.long), seen], dim=1
        )
        start = self.history.shape[1]
        target = padded[:, start : start + n]  # the symbol `delay` steps before each new one
        self.history = seen[:, -self.delay :] if self.delay else seen[:, :0]
        x = nn.functional.one_hot(fresh, self.symbols).to(self.dtype)
        return x.to(self.device), target.to(self.device)

    def state_dict(self) -> dict:
        return {"history": self.history.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.history = state["history"].clone()


def delayed_echo(
    length: int,
    steps: int,
    batch_size: int = 1,
    *,
    symbols: int = 4,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float32,
) -> tuple[Tensor, Tensor]:
    """A stream of random symbols whose target is the symbol ``length`` steps earlier.

    Args:
        length: the delay d (>= 0).
        steps: how many steps to return.
        batch_size: parallel streams B.
        symbols: alphabet size K.

    Returns:
        ``(x, y)``: x (B, steps, K) one-hot, y (B, steps) int64; the first d targets
        are -100 (nothing to echo yet).

    Example:
        >>> x, y = delayed_echo(2, 6, seed=0)
        >>> bool((y[0, 2:] == x[0, :4].argmax(-1)).all()), y[0, :2].tolist()
        (True, [-100, -100])
    """
    check_length(length, 0)
    check_length(steps, 1, "steps")
    gen = resolve_generator(seed, generator)
    return _EchoStream(length, symbols, batch_size, gen, device, dtype).next(steps)


class EchoTask(StreamTask):
    """Delayed echo: output the input from ``length`` = d steps ago (K = 4 symbols).

    Truncated backprop through k2 < d steps cannot learn it: the gradient that would
    link the output to the input d steps back is cut. Baseline cross-entropy ln 4
    (uniform); solved below 5% of it on a held-out stream of 2,000 steps.
    """

    name = "echo"
    symbols = 4
    input_size = 4
    output_size = 4
    metric = "test_ce"
    min_length = 0
    solved_fraction = 0.05
    test_steps = 2000

    @property
    def baseline_loss(self) -> float:
        return math.log(self.symbols)

    def open_stream(self, batch_size, generator, *, device=None, dtype=torch.float32):
        return _EchoStream(self.length, self.symbols, batch_size, generator, device, dtype)

    def _test(self, device, dtype) -> tuple[Tensor, Tensor]:
        gen = torch.Generator().manual_seed(20_261_121)  # one fixed test stream
        return delayed_echo(
            self.length,
            self.test_steps,
            16,
            symbols=self.symbols,
            generator=gen,
            device=device,
            dtype=dtype,
        )

    def evaluate(self, model, *, device=None, dtype=torch.float32) -> float:
        return self._stream_loss(model, *self._test(device, dtype))[0]

    def accuracy(self, model, *, device=None, dtype=torch.float32) -> float:
        """Share of held-out steps whose echo is predicted right (chance: 1/4)."""
        return self._stream_loss(model, *self._test(device, dtype))[1]

    def is_solved(self, test_loss: float) -> bool:
        return test_loss < self.solved_fraction * self.baseline_loss


# Pure-Python modules present, with the same name, in the standard library of every
# supported Python; their text differs a little between versions.
TEXT_FILES = (
    "textwrap.py",
    "string.py",
    "shlex.py",
    "fnmatch.py",
    "glob.py",
    "heapq.py",
    "bisect.py",
    "colorsys.py",
    "base64.py",
    "calendar.py",
    "difflib.py",
    "pprint.py",
)
ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))  # 96 characters


def stdlib_text() -> str:
    """The corpus: the :data:`TEXT_FILES` of this Python's standard library, concatenated,
    every character outside :data:`ALPHABET` replaced by a space."""
    root = Path(sysconfig.get_paths()["stdlib"])
    text = "".join((root / name).read_text(encoding="utf-8") for name in TEXT_FILES)
    known = set(ALPHABET)
    return "".join(c if c in known else " " for c in text)


class _TextStream(Stream):
    def __init__(self, codes: Tensor, batch: int, device, dtype):
        self.codes, self.device, self.dtype = codes, device, dtype
        span = codes.shape[0] // batch
        self.offsets = torch.arange(batch) * span  # each stream reads its own part
        self.position = 0

    def next(self, n: int) -> tuple[Tensor, Tensor]:
        where = (self.offsets[:, None] + self.position + torch.arange(n + 1)) % self.codes.shape[0]
        chars = self.codes[where]  # (B, n + 1)
        self.position += n
        x = nn.functional.one_hot(chars[:, :-1], len(ALPHABET)).to(self.dtype)
        return x.to(self.device), chars[:, 1:].to(self.device)

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])


class TextTask(StreamTask):
    """Character-level language modelling of Python standard-library source.

    The corpus is :func:`stdlib_text`; its first 90% is the training stream (read as B
    parallel streams from evenly spaced offsets), its last 10% the test stream, read
    once as one sequence with the state carried. The metric is bits per character
    (cross-entropy / ln 2). Baseline: the entropy of the training text's character
    frequencies. Counted as solved below 2.5 bits per character, a milestone (a model
    that has learned Python's words and indentation) rather than a standard. The task's
    ``length`` is the probe length for diagnoses.
    """

    name = "text"
    input_size = len(ALPHABET)
    output_size = len(ALPHABET)
    metric = "test_bpc"
    solved_below = 2.5
    _codes: Tensor | None = None

    @classmethod
    def codes(cls) -> Tensor:
        """The whole corpus as character indices (cached)."""
        if cls._codes is None:
            index = {c: k for k, c in enumerate(ALPHABET)}
            cls._codes = torch.tensor([index[c] for c in stdlib_text()], dtype=torch.long)
        return cls._codes

    def _split(self) -> tuple[Tensor, Tensor]:
        codes = self.codes()
        cut = int(0.9 * codes.shape[0])
        return codes[:cut], codes[cut:]

    @property
    def baseline_loss(self) -> float:
        train, _ = self._split()
        p = torch.bincount(train, minlength=len(ALPHABET)).double() / train.shape[0]
        p = p[p > 0]
        return float(-(p * p.log2()).sum())

    def open_stream(self, batch_size, generator, *, device=None, dtype=torch.float32):
        train, _ = self._split()
        return _TextStream(train, batch_size, device, dtype)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(prediction.flatten(0, 1), target.flatten())

    def evaluate(self, model, *, device=None, dtype=torch.float32) -> float:
        _, test = self._split()
        x = nn.functional.one_hot(test[:-1], len(ALPHABET)).to(dtype)[None].to(device)
        y = test[1:][None].to(device)
        return self._stream_loss(model, x, y)[0] / math.log(2)

    def is_solved(self, test_loss: float) -> bool:
        return test_loss < self.solved_below
