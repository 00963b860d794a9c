"""The CUDA-graph path of the loop kernels (:mod:`bptt._kernels._graphs`), its
bookkeeping checked on the CPU with each graph replaced by direct execution: inputs
copied in, outputs and gradients copied out, RecordNorms handed its norms, one capture
per shape reused, and every pass it must not take left uncaptured. float64 throughout;
the captured pass runs the same kernel on the same numbers, so it must agree exactly
with the uncaptured one."""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch

import bptt
from bptt._kernels import _graphs
from bptt._kernels._workspace import WORKSPACE
from bptt.engine import unroll_stacked
from bptt.taps import ClipNorm, ClipValue, RecordNorms
from helpers import make_cell

DT = torch.float64


def _taps():
    return [RecordNorms(), ClipNorm(0.05), ClipValue(0.02), RecordNorms()]


def _pass(cell, x, weights, taps):
    """One training pass: every result a step would use."""
    cell.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out, final = bptt.unroll(cell, x, taps=taps, engine="fast")
    last = final[0] if isinstance(final, tuple) else final
    ((out * weights).sum() + last.square().sum()).backward()
    grads = [p.grad.clone() for p in cell.parameters()]
    norms = [t.norms.clone() for t in taps if isinstance(t, RecordNorms)]
    return [out.detach(), last.detach(), x.grad, *grads, *norms]


@pytest.mark.parametrize("kind", ["rnn-tanh", "rnn-relu", "lstm", "gru"])
def test_replayed_passes_equal_uncaptured_ones(kind, gen):
    """Three passes of one shape, the inputs and the weights changed between them (as a
    training loop does): captured once, replayed twice, each equal to the uncaptured."""
    cell = make_cell(kind)
    made = _graphs.CAPTURES.made
    for _ in range(3):
        x = torch.randn(4, 11, 3, generator=gen, dtype=DT)
        weights = torch.randn(4, 11, 5, generator=gen, dtype=DT)
        plain = _pass(cell, x, weights, _taps())
        with _graphs.direct_execution():
            graphed = _pass(cell, x, weights, _taps())
            assert _graphs.CAPTURES.made == made + 1  # one capture, reused
            graphed_again = _pass(cell, x, weights, _taps())
        for a, b, c in zip(graphed, plain, graphed_again, strict=True):
            assert torch.equal(a, b) and torch.equal(c, b)
        with torch.no_grad():
            for p in cell.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=DT))
        made = _graphs.CAPTURES.made


def test_stacked_runs_replayed_equal_uncaptured(gen):
    cells = [make_cell("lstm") for _ in range(3)]
    x = torch.randn(3, 4, 9, 3, generator=gen, dtype=DT)
    weights = torch.randn(3, 4, 9, 5, generator=gen, dtype=DT)

    def once():
        for cell in cells:
            cell.zero_grad(set_to_none=True)
        taps = [[RecordNorms(), ClipNorm(0.1 + 0.1 * k)] for k in range(3)]
        out = unroll_stacked(cells, x, taps=taps)
        (out * weights).sum().backward()
        return (
            [out.detach()]
            + [p.grad.clone() for c in cells for p in c.parameters()]
            + [own[0].norms for own in taps]
        )

    plain = once()
    with _graphs.direct_execution():
        first, second = once(), once()
    for a, b, c in zip(first, plain, second, strict=True):
        assert torch.equal(a, b) and torch.equal(c, b)


def test_passes_it_must_not_take_run_uncaptured(gen, monkeypatch):
    cell = make_cell("gru")
    x = torch.randn(4, 11, 3, generator=gen, dtype=DT)
    weights = torch.randn(4, 11, 5, generator=gen, dtype=DT)
    with _graphs.direct_execution():
        made = _graphs.CAPTURES.made
        seen = []
        _pass(cell, x, weights, [lambda t, delta: seen.append(t) or delta])  # a tap of its own
        assert seen and _graphs.CAPTURES.made == made
        with torch.no_grad():  # a forward alone
            bptt.unroll(cell, x, engine="fast")
        assert _graphs.CAPTURES.made == made
        monkeypatch.setenv("BPTT_CUDA_GRAPHS", "0")
        _pass(cell, x, weights, _taps())
        assert _graphs.CAPTURES.made == made
    # outside direct execution, on the CPU, nothing is captured
    monkeypatch.delenv("BPTT_CUDA_GRAPHS")
    _pass(cell, x, weights, _taps())
    assert _graphs.CAPTURES.made == made
    run = bptt._kernels.Pass(((),), True)
    assert "not CUDA" in _graphs.graph_refusal(x, run, [x.requires_grad_()])


def test_passes_pending_at_once_get_their_own_captures_then_run_uncaptured(gen):
    """Three passes of one shape in one loss (one cell used three times, as a
    bidirectional layer's two directions are): they would share a graph's memory, so
    the first two get a capture each and the third runs uncaptured; every gradient is
    right. Holding only the final state (the outputs dropped) keeps a pass pending."""
    cell = make_cell("lstm")
    xs = [torch.randn(4, 11, 3, generator=gen, dtype=DT) for _ in range(3)]

    def together():
        cell.zero_grad(set_to_none=True)
        records = [RecordNorms() for _ in xs]
        pairs = zip(xs, records, strict=True)
        finals = [bptt.unroll(cell, x, taps=[r], engine="fast")[1][0] for x, r in pairs]
        (finals[0].square().sum() + (finals[1] * finals[2]).sum()).backward()
        return [p.grad.clone() for p in cell.parameters()] + [r.norms for r in records]

    plain = together()
    with _graphs.direct_execution():
        made = _graphs.CAPTURES.made
        graphed = together()
        assert _graphs.CAPTURES.made == made + 2
        again = together()  # the captures are free again after the backward
        assert _graphs.CAPTURES.made == made + 2
    for a, b, c in zip(graphed, plain, again, strict=True):
        assert torch.equal(a, b) and torch.equal(c, b)


def test_a_graphed_pass_keeps_the_kernels_backward_contract(gen):
    """One backward per pass, no second derivative: as the loop kernels refuse them."""
    cell = make_cell("gru")
    x = torch.randn(4, 11, 3, generator=gen, dtype=DT, requires_grad=True)
    with _graphs.direct_execution():
        out, _ = bptt.unroll(cell, x, taps=[RecordNorms()], engine="fast")
        loss = out.square().sum()
        loss.backward(retain_graph=True)
        with pytest.raises(RuntimeError, match="one backward pass per forward pass"):
            loss.backward()
        out, _ = bptt.unroll(cell, x, taps=[RecordNorms()], engine="fast")
        with pytest.raises(RuntimeError, match="no derivative of its own"):
            torch.autograd.grad(out.sum(), x, create_graph=True)


def test_the_warm_up_a_cuda_capture_runs_builds_what_the_backward_needs(gen, monkeypatch):
    """A CUDA capture first runs a few passes on a side stream; here the stream calls are
    stood in for and the graph is direct execution that asks for the warm-up: the
    capture is made (not logged as failed) and replays right."""

    class Stream:
        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(_graphs.DirectExecution, "warm_up", True)
    cell = make_cell("lstm")
    x = torch.randn(4, 11, 3, generator=gen, dtype=DT)
    weights = torch.randn(4, 11, 5, generator=gen, dtype=DT)
    plain = _pass(cell, x, weights, _taps())
    with _graphs.direct_execution():
        made, failed = _graphs.CAPTURES.made, _graphs.CAPTURES.failed
        graphed = _pass(cell, x, weights, _taps())
        assert (_graphs.CAPTURES.made, _graphs.CAPTURES.failed) == (made + 1, failed)
    for a, b in zip(graphed, plain, strict=True):
        assert torch.equal(a, b)


def test_a_failed_capture_is_logged_once_and_runs_uncaptured(gen, monkeypatch, caplog):
    def broken(self, body):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(_graphs.DirectExecution, "capture", broken)
    cell = make_cell("rnn-tanh")
    x = torch.randn(4, 11, 3, generator=gen, dtype=DT)
    weights = torch.randn(4, 11, 5, generator=gen, dtype=DT)
    plain = _pass(cell, x, weights, _taps())
    with _graphs.direct_execution(), caplog.at_level(logging.WARNING, logger="bptt.engine"):
        results = [_pass(cell, x, weights, _taps()) for _ in range(3)]
    assert caplog.text.count("CUDA graph capture failed") == 1
    for result in results:
        for a, b in zip(result, plain, strict=True):
            assert torch.equal(a, b)


def test_the_workspace_stands_aside_while_private():
    like = torch.zeros(1)
    kept = WORKSPACE.take((3, 7), like)
    WORKSPACE.give(kept)
    with WORKSPACE.private():
        fresh = WORKSPACE.take((3, 7), like)
        assert fresh.data_ptr() != kept.data_ptr()  # the pooled one stays in the pool
        WORKSPACE.give(fresh)  # kept by nobody
    assert WORKSPACE.take((3, 7), like).data_ptr() == kept.data_ptr()
    assert WORKSPACE.take((3, 7), like).data_ptr() not in (kept.data_ptr(), fresh.data_ptr())
