"""Spectral norms of the recurrent Jacobian along a real trajectory, by power iteration."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor, nn

from bptt import _checks
from bptt.cells import State, as_tuple
from bptt.diagnose._trajectory import (
    as_state,
    cell_of,
    generator_seed,
    iterations,
    previous_states,
    probe,
    stack_rows,
)

__all__ = ["jacobian_norms", "jacobian_product_norms", "recurrent_spectrum"]


def _row_norms(parts: tuple[Tensor, ...]) -> Tensor:
    """Per row, the norm over all components: (N,)."""
    return torch.stack([p.flatten(1).square().sum(1) for p in parts]).sum(0).sqrt()


_CHUNK_ROWS = 2048  # rows linearised at once: the memory is bounded by this, not by T


# torch.func.vjp of a step of one argument (a tuple of tensors): the output, and the
# function giving that argument's cotangent.
_Linearised = tuple[tuple[Tensor, ...], Callable[..., tuple[tuple[Tensor, ...]]]]


def _spectral_norms(
    step: Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]],
    primal: tuple[Tensor, ...],
    start: tuple[Tensor, ...],
    iters: int,
) -> Tensor:
    """Largest singular value of each row's Jacobian of ``step`` at ``primal``.

    ``step`` maps rows to rows independently, so one forward-mode and one reverse-mode
    product handle every row at once; power iteration on J^T J from ``start``, never a
    full Jacobian.
    """
    # torch's annotation of vjp covers has_aux too: here it is (output, vjp_fn)
    _, backward = cast(_Linearised, torch.func.vjp(step, primal))  # linearised once, reused

    def forward(tangent: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        with warnings.catch_warnings():
            # torch's forward-mode AD loads its decompositions with torch.jit.script on
            # first use and warns that it is deprecated: torch's own affair, not the user's
            warnings.filterwarnings(
                "ignore", "`torch.jit.script` is deprecated", DeprecationWarning
            )
            return torch.func.jvp(step, (primal,), (tangent,))[1]

    v = start
    sigma = torch.zeros(primal[0].shape[0], dtype=primal[0].dtype, device=primal[0].device)
    for _ in range(iters):
        norm = _row_norms(v).clamp_min(torch.finfo(sigma.dtype).tiny)
        v = tuple(p / norm.view(-1, *([1] * (p.dim() - 1))) for p in v)
        u = forward(v)
        sigma = _row_norms(u)
        (v,) = backward(u)
    return sigma


def _constant_step(cell: nn.Module) -> Callable[..., State]:
    """The cell's step with its parameters as constants: the linearisations then keep no
    graph towards the parameters (5x less memory for an LSTM)."""
    fixed = {name: p.detach() for name, p in cell.named_parameters()}
    fixed.update(dict(cell.named_buffers()))
    return lambda *args: torch.func.functional_call(cell, fixed, args)


def _chunked_norms(
    rows: int,
    make_step: Callable[[slice], Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]],
    primal: tuple[Tensor, ...],
    iters: int,
    seed: int,
) -> Tensor:
    """:func:`_spectral_norms` over the rows in chunks of :data:`_CHUNK_ROWS`, each from
    start vectors drawn in turn from one generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    pieces = []
    for begin in range(0, rows, _CHUNK_ROWS):
        part = slice(begin, min(begin + _CHUNK_ROWS, rows))
        here = tuple(p[part] for p in primal)
        start = tuple(torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in here)
        pieces.append(_spectral_norms(make_step(part), here, start, iters))
    return torch.cat(pieces)


def jacobian_norms(
    cell: nn.Module, x: Tensor, state: State | None = None, *, iters: int = 30, seed: int = 0
) -> Tensor:
    """The spectral norm of each sample's one-step Jacobian ds_t/ds_{t-1} at each step.

    Along the trajectory the cell follows on x, with x_t held fixed; for a tuple state
    (LSTM) the Jacobian of the whole state. The cell must treat samples
    independently (as recurrent cells do). Memory: the trajectory's states, plus a
    bounded chunk of rows linearised at a time.

    Args:
        cell: a one-step cell or a :class:`bptt.SequenceModel`.
        x: inputs (B, T, F).
        state: the initial state (None: zeros).
        iters: power iterations, >= 1 (the estimate approaches sigma_max from below).
        seed: seeds the start vectors.

    Returns:
        A tensor (B, T).

    Raises:
        TypeError: ``cell`` is not a cell, ``x`` not a floating-point tensor, ``iters``
            or ``seed`` not an integer.
        ValueError: ``x`` is not (B, T, F) with B, T >= 1 or holds NaN or inf;
            ``iters`` is below 1.
    """
    cell = cell_of(cell, state)
    x = probe(cell, x, state)
    iters, seed = iterations(iters), generator_seed(seed)
    batch, steps = x.shape[:2]
    before = previous_states(cell, x, state)
    like = before[0] if len(before[0]) > 1 else before[0][0]
    primal = stack_rows(before)  # each (T*B, ...)
    del before  # the stacked copy is all that is needed: half the memory at long T
    inputs = x.detach().transpose(0, 1).reshape(steps * batch, -1)  # (T*B, F), time-major
    call = _constant_step(cell)

    def make_step(part: slice) -> Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]:
        return lambda parts: as_tuple(call(inputs[part], as_state(parts, like)))

    sigma = _chunked_norms(steps * batch, make_step, primal, iters, seed)
    return sigma.view(steps, batch).t().detach()


def jacobian_product_norms(
    cell: nn.Module,
    x: Tensor,
    window: int,
    state: State | None = None,
    *,
    iters: int = 30,
    seed: int = 0,
) -> Tensor:
    """The spectral norm of the product of ``window`` consecutive Jacobians.

    For the k-th window of steps [k w, (k+1) w), the norm of ds_{(k+1)w-1}/ds_{kw-1},
    with the inputs fixed: how much the dynamics stretch over w steps.

    Args:
        cell: a one-step cell or a :class:`bptt.SequenceModel`.
        x: inputs (B, T, F).
        window: w, the steps whose Jacobians are multiplied, in 1..T.
        state: the initial state (None: zeros).
        iters: power iterations, >= 1.
        seed: seeds the start vectors.

    Returns:
        A tensor (B, T // window).

    Raises:
        TypeError, ValueError: as :func:`jacobian_norms`, and for a ``window`` that is
            not an integer in 1..T.
    """
    cell = cell_of(cell, state)
    x = probe(cell, x, state)
    iters, seed = iterations(iters), generator_seed(seed)
    batch, steps = x.shape[:2]
    window = _checks.integer("window", window, 1, steps)
    count = steps // window
    before = previous_states(cell, x, state)
    primal = stack_rows([before[k * window] for k in range(count)])  # (K*B, ...)
    chunks = x.detach()[:, : count * window].reshape(batch, count, window, -1)
    inputs = chunks.transpose(0, 1).reshape(count * batch, window, -1)  # (K*B, w, F)
    like = before[0] if len(before[0]) > 1 else before[0][0]
    call = _constant_step(cell)

    def make_step(part: slice) -> Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]:
        def run(parts: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            s = as_state(parts, like)
            for x_t in inputs[part].unbind(1):
                s = call(x_t, s)
            return as_tuple(s)

        return run

    sigma = _chunked_norms(count * batch, make_step, primal, iters, seed)
    return sigma.view(count, batch).t().detach()


@torch.no_grad()
def recurrent_spectrum(cell: nn.Module) -> dict[str, float]:
    """Eigenvalues and singular values of the recurrent weight matrix.

    For a cell with ``weight_hh`` of shape (G*H, H) (G gate blocks, named by the
    cell's ``gates``), per block: ``rho_<gate>`` (largest |eigenvalue|) and
    ``sigma_<gate>`` (largest singular value); over all: ``rho`` and ``sigma_max``.
    Empty for a cell without ``weight_hh``. For the probe's copy of an LSTM layer with
    ``proj_size`` P, each block is the gate's map from h back to h's space through the
    projection, W_hr W_hh^gate (P, P).
    """
    cell = cell_of(cell, runs=False)
    weight = getattr(cell, "weight_hh", None)
    own = getattr(cell, "recurrent_blocks", None)  # an LSTM with a projection
    if callable(own):
        weight = cast(Tensor, own()).flatten(0, 1)  # (G*P, P): W_hr W_hh^gate stacked
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        return {}
    hidden = weight.shape[1]
    blocks = weight.detach().double().cpu().view(-1, hidden, hidden)
    names = getattr(cell, "gates", ()) or tuple(str(k) for k in range(blocks.shape[0]))
    out: dict[str, float] = {}
    for name, block in zip(names, blocks, strict=False):
        out[f"rho_{name}"] = torch.linalg.eigvals(block).abs().max().item()
        out[f"sigma_{name}"] = torch.linalg.matrix_norm(block, ord=2).item()
    out["rho"] = max(v for k, v in out.items() if k.startswith("rho_"))
    out["sigma_max"] = torch.linalg.matrix_norm(weight.detach().double().cpu(), ord=2).item()
    return out
