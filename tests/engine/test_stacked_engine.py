"""The stacked engine (K runs in one pass) against each cell run alone by autograd."""

from __future__ import annotations

import pytest
import torch

import bptt
from bptt.engine import has_fast_engine, stackable, unroll_stacked
from bptt.taps import ClipNorm, ClipValue, RecordNorms

# float64: the stacked engine and the lone runs do the same products in another
# grouping (batched against single matmuls), a few roundings of 1e-16 per operation
# over T steps of a contracting or orthogonal recurrence; 1e-9 leaves room for that.
TOL = 1e-9


def _cells(kind: str, k: int, features: int, hidden: int) -> list[torch.nn.Module]:
    make = {
        "rnn-tanh": lambda: bptt.cells.RNNCell(features, hidden, dtype=torch.float64),
        "rnn-relu": lambda: bptt.cells.RNNCell(
            features, hidden, nonlinearity="relu", dtype=torch.float64
        ),
        "lstm": lambda: bptt.cells.LSTMCell(features, hidden, dtype=torch.float64),
        "gru": lambda: bptt.cells.GRUCell(features, hidden, dtype=torch.float64),
        "lstm-nobias": lambda: bptt.cells.LSTMCell(
            features, hidden, bias=False, dtype=torch.float64
        ),
        "gru-nobias": lambda: bptt.cells.GRUCell(features, hidden, bias=False, dtype=torch.float64),
        "orthogonal-modrelu": lambda: bptt.cells.OrthogonalRNNCell(
            features, hidden, nonlinearity="modrelu", dtype=torch.float64
        ),
        "orthogonal-tanh": lambda: bptt.cells.OrthogonalRNNCell(
            features, hidden, dtype=torch.float64
        ),
        "orthogonal-relu": lambda: bptt.cells.OrthogonalRNNCell(
            features, hidden, nonlinearity="relu", dtype=torch.float64
        ),
        "rnn-nobias": lambda: bptt.cells.RNNCell(features, hidden, bias=False, dtype=torch.float64),
    }[kind]
    cells = []
    for seed in range(k):
        torch.manual_seed(seed)
        cells.append(make())
    return cells


KINDS = [
    "rnn-tanh",
    "rnn-relu",
    "lstm",
    "gru",
    "lstm-nobias",
    "gru-nobias",
    "orthogonal-modrelu",
    "orthogonal-tanh",
    "orthogonal-relu",
    "rnn-nobias",
]


@pytest.mark.parametrize("kind", KINDS)
def test_stacked_equals_each_cell_alone(kind: str) -> None:
    k, batch, steps, features, hidden = 3, 4, 9, 2, 5
    cells = _cells(kind, k, features, hidden)
    torch.manual_seed(10)
    x = torch.randn(k, batch, steps, features, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(k, batch, steps, hidden, dtype=torch.float64)  # a loss of all outputs
    out = unroll_stacked(cells, x)
    assert out.shape == (k, batch, steps, hidden)
    (out * weights).sum().backward()
    stacked_grads = [[p.grad.clone() for p in c.parameters()] for c in cells]
    stacked_x_grad = x.grad.clone()
    for c in cells:
        c.zero_grad(set_to_none=True)
    for j, cell in enumerate(cells):
        xj = x.detach()[j].clone().requires_grad_()
        alone, _ = bptt.unroll(cell, xj, engine="generic")
        torch.testing.assert_close(out[j], alone, rtol=TOL, atol=TOL)
        (alone * weights[j]).sum().backward()
        for got, (name, p) in zip(stacked_grads[j], cell.named_parameters(), strict=True):
            torch.testing.assert_close(got, p.grad, rtol=TOL, atol=TOL, msg=name)
        torch.testing.assert_close(stacked_x_grad[j], xj.grad, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kind", ["rnn-tanh", "lstm", "gru", "orthogonal-modrelu"])
def test_every_parameter_gets_a_gradient_tensor_of_its_own(kind: str) -> None:
    # in-place clipping scales each .grad: two parameters sharing one would be scaled twice
    cells = _cells(kind, 2, 2, 4)
    unroll_stacked(cells, torch.randn(2, 3, 5, 2, dtype=torch.float64)).sum().backward()
    grads = [p.grad for cell in cells for p in cell.parameters()]
    before = [g.clone() for g in grads]
    for i, grad in enumerate(grads):
        grad.mul_(2.0)
        for j, other in enumerate(grads):
            assert torch.equal(other, before[j] * (2.0 if j <= i else 1.0)), (i, j)


def _taps_of_run(run: int) -> list:
    """Each run's own taps, thresholds that differ by run and clip at some steps."""
    return [RecordNorms(), ClipNorm(0.3 + 0.2 * run), ClipValue(0.15), RecordNorms()]


@pytest.mark.parametrize("kind", ["rnn-tanh", "rnn-relu", "lstm", "gru", "orthogonal-modrelu"])
def test_stacked_runs_with_taps_equal_each_run_alone_with_its_taps(kind: str) -> None:
    k, batch, steps, features, hidden = 3, 4, 9, 2, 5
    cells = _cells(kind, k, features, hidden)
    torch.manual_seed(11)
    x = torch.randn(k, batch, steps, features, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(k, batch, steps, hidden, dtype=torch.float64)
    stacked_taps = [_taps_of_run(j) for j in range(k)]
    out = unroll_stacked(cells, x, taps=stacked_taps)
    (out * weights).sum().backward()
    stacked_grads = [[p.grad.clone() for p in c.parameters()] for c in cells]
    stacked_x_grad = x.grad.clone()
    clipped = 0
    for j, cell in enumerate(cells):
        for engine in ("fast", "generic"):
            cell.zero_grad(set_to_none=True)
            xj = x.detach()[j].clone().requires_grad_()
            taps = _taps_of_run(j)
            alone, _ = bptt.unroll(cell, xj, taps=taps, engine=engine)
            torch.testing.assert_close(out[j], alone, rtol=TOL, atol=TOL)
            (alone * weights[j]).sum().backward()
            for got, (name, p) in zip(stacked_grads[j], cell.named_parameters(), strict=True):
                torch.testing.assert_close(got, p.grad, rtol=TOL, atol=TOL, msg=name)
            torch.testing.assert_close(stacked_x_grad[j], xj.grad, rtol=TOL, atol=TOL)
            for mine, theirs in ((0, 0), (3, 3)):
                got, want = stacked_taps[j][mine].norms, taps[theirs].norms
                torch.testing.assert_close(got, want, rtol=TOL, atol=TOL)
        clipped += int((stacked_taps[j][0].norms > 0.3 + 0.2 * j).sum())
    assert clipped > 0  # the clipping taps had something to do


def test_stacked_taps_are_one_sequence_per_run() -> None:
    cells = _cells("gru", 2, 2, 3)
    x = torch.zeros(2, 1, 3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="one sequence of taps per run"):
        unroll_stacked(cells, x, taps=[[RecordNorms()]])
    with pytest.raises(TypeError, match="taps"):
        unroll_stacked(cells, x, taps=[RecordNorms(), RecordNorms()])
    out = unroll_stacked(cells, x, taps=[[], [RecordNorms()]])  # a run may have none
    assert out.shape == (2, 1, 3, 3)


def test_a_subclass_has_a_kernel_only_where_it_declares_one() -> None:
    class Changed(bptt.cells.RNNCell):  # may change what a step computes
        pass

    class Same(bptt.cells.RNNCell):
        kernel = bptt.cells.RNNCell.kernel  # opts in: the same step

    assert bptt.cells.RNNCell.kernel is not None
    assert Changed.kernel is None and not has_fast_engine(Changed(2, 3))
    assert Same.kernel is bptt.cells.RNNCell.kernel and has_fast_engine(Same(2, 3))
    assert "no stacked engine" in stackable([Changed(2, 3), Changed(2, 3)])
    assert stackable([Same(2, 3), Same(2, 3)]) is None
    assert bptt.engine.STACKABLE_CELLS == (
        bptt.cells.GRUCell,
        bptt.cells.LSTMCell,
        bptt.cells.OrthogonalRNNCell,
        bptt.cells.RNNCell,
    )


def test_stacked_one_step_and_one_run() -> None:
    cells = _cells("lstm", 1, 3, 4)
    x = torch.randn(1, 2, 1, 3, dtype=torch.float64)
    out = unroll_stacked(cells, x)
    out.sum().backward()
    stacked = [p.grad.clone() for p in cells[0].parameters()]
    cells[0].zero_grad(set_to_none=True)
    alone, _ = bptt.unroll(cells[0], x[0], engine="generic")
    alone.sum().backward()
    torch.testing.assert_close(out[0], alone, rtol=TOL, atol=TOL)
    for got, p in zip(stacked, cells[0].parameters(), strict=True):
        torch.testing.assert_close(got, p.grad, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kind", ["rnn-tanh", "lstm", "gru"])
def test_the_backward_leaves_the_incoming_gradient_as_it_was(kind: str) -> None:
    k, batch, steps, hidden = 2, 3, 4, 5
    cells = _cells(kind, k, 2, hidden)
    out = unroll_stacked(cells, torch.randn(k, batch, steps, 2, dtype=torch.float64))
    base = torch.randn(steps, k, batch, hidden, dtype=torch.float64)  # time-major storage
    kept = base.clone()
    out.backward(base.permute(1, 2, 0, 3))  # (K, B, T, H), its time-major view contiguous
    assert torch.equal(base, kept)


def test_bad_inputs_and_contexts_are_refused() -> None:
    lstm = _cells("lstm", 2, 2, 5)
    good = torch.zeros(2, 1, 3, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="must be a tensor"):
        unroll_stacked(lstm, good.tolist())
    for bad in (good.float(), good.long(), torch.zeros(2, 1, 3, 4, dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"dtype|features"):
            unroll_stacked(lstm, bad)
    with bptt.engine.require_generic("a test"), pytest.raises(ValueError, match="a test"):
        unroll_stacked(lstm, good)
    with pytest.raises(ValueError, match=r"torch\.func"):
        torch.func.vmap(lambda v: unroll_stacked(lstm, v))(good[None])
    assert unroll_stacked(lstm, good).shape == (2, 1, 3, 5)


def test_stackable_refuses_what_it_cannot_run() -> None:
    lstm = _cells("lstm", 2, 2, 5)
    assert stackable(lstm) is None
    assert "no cells" in stackable([])
    assert "beside" in stackable([lstm[0], _cells("gru", 1, 2, 5)[0]])
    assert "sizes" in stackable([lstm[0], _cells("lstm", 1, 2, 6)[0]])
    assert "nonlinearities" in stackable(_cells("rnn-tanh", 1, 2, 5) + _cells("rnn-relu", 1, 2, 5))
    assert "no stacked engine" in stackable([bptt.cells.LRUCell(2, 5, 4)])
    with pytest.raises(ValueError, match="cannot run stacked"):
        unroll_stacked([bptt.cells.LRUCell(2, 5, 4)], torch.zeros(1, 1, 1, 2))
    for bad in (torch.zeros(3, 1, 1, 2), torch.zeros(2, 1, 2), torch.zeros(2, 0, 1, 2)):
        with pytest.raises(ValueError, match="x must be"):
            unroll_stacked(lstm, bad)


@pytest.mark.parametrize("kind", ["rnn-tanh", "lstm", "gru"])
@pytest.mark.parametrize("chunked", [False, True])
def test_stacked_runs_each_with_one_recorder(kind: str, chunked: bool, monkeypatch) -> None:
    """Each run's lone RecordNorms (its norms taken a chunk at a time, after the steps,
    not in the loop) records what the generic engine records for that run alone; with
    chunks of one step and gradient sums every two, the gradients hold too."""
    if chunked:
        from bptt._kernels import _common

        monkeypatch.setattr(_common, "_CHUNK_ELEMENTS", 1)
        monkeypatch.setattr(_common, "_GRAD_ROWS", 8)  # batch 4: every 2 steps
    k, batch, steps, features, hidden = 3, 4, 9, 2, 5
    cells = _cells(kind, k, features, hidden)
    torch.manual_seed(12)
    x = torch.randn(k, batch, steps, features, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(k, batch, steps, hidden, dtype=torch.float64)
    records = [[RecordNorms()] for _ in range(k)]
    (unroll_stacked(cells, x, taps=records) * weights).sum().backward()
    stacked_grads = [[p.grad.clone() for p in c.parameters()] for c in cells]
    stacked_x_grad = x.grad.clone()
    for j, cell in enumerate(cells):
        cell.zero_grad(set_to_none=True)
        xj = x.detach()[j].clone().requires_grad_()
        alone = RecordNorms()
        out, _ = bptt.unroll(cell, xj, taps=[alone], engine="generic")
        (out * weights[j]).sum().backward()
        torch.testing.assert_close(records[j][0].norms, alone.norms, rtol=TOL, atol=TOL)
        for got, (name, p) in zip(stacked_grads[j], cell.named_parameters(), strict=True):
            torch.testing.assert_close(got, p.grad, rtol=TOL, atol=TOL, msg=name)
        torch.testing.assert_close(stacked_x_grad[j], xj.grad, rtol=TOL, atol=TOL)


def test_the_stacked_engine_is_chosen_and_refused_with_reasons() -> None:
    """On the CPU outside Triton's interpreter: "auto" and "fast" run the loop (the same
    results), "triton" is refused saying why, an unknown engine is refused."""
    cells = _cells("gru", 2, 2, 4)
    x = torch.randn(2, 3, 5, 2, dtype=torch.float64)
    fast = unroll_stacked(cells, x, engine="fast")
    assert torch.equal(unroll_stacked(cells, x, engine="auto"), fast)
    with pytest.raises(ValueError, match="engine='triton' cannot run these cells stacked"):
        unroll_stacked(cells, x, engine="triton")
    with pytest.raises(ValueError, match="engine must be 'auto', 'fast' or 'triton'"):
        unroll_stacked(cells, x, engine="cuda")
