"""Engines: fast == generic == a plain autograd loop, with and without taps (float64).

The taps are also checked against an independent reference: tensor hooks on an
identity view of each step's state in a plain loop (see helpers.plain_loop).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import bptt
from bptt.taps import ClipNorm, ClipValue, RecordNorms
from helpers import (
    CELL_KINDS,
    DT,
    LinearCell,
    grads_of,
    loss_of,
    make_cell,
    plain_loop,
    rounding_tol,
)

# Two engines sum in different orders (summed biases, addmm, another BLAS call), so they
# agree to rounding (helpers.rounding_tol), bounded here for the largest setup, _inputs:
# T = 11 steps, F = 3, H = 5, float64, |weights| <= 1/sqrt(H). A pre-activation sums F + H
# products and 2 biases; the gates, nonlinearities and state update add at most 8 roundings.
STEPS, PER_STEP = 11, 3 + 5 + 2 + 8
# Backward, per step: dL/dh_{t-1} sums the 4H (LSTM) pre-activation gradients; 9 more roundings
# in the gate derivatives and the taps.
BACK_PER_STEP = 4 * 5 + 9
# Outputs: every step's error is carried on with a factor < 1 (one-step Jacobian norms 0.6-1.1,
# their product over T < 0.05), so T * PER_STEP roundings of terms that add up to < 4
# (|x| < 3, |h| < 1.4): 1.8e-13. A wrong gate or sign moves outputs by > 1e-2.
OUT_ATOL = rounding_tol(STEPS * PER_STEP, 4.0)
# Gradients (and the taps' norms of dL/dh_t): the forward, T backward steps, and the B T = 44
# products summed into a parameter's gradient, whose magnitudes add up to < 50 (14-45 here): 6e-12.
GRAD_ATOL = rounding_tol(STEPS * (PER_STEP + BACK_PER_STEP) + 4 * STEPS, 50.0)

TAP_SETS = {
    "none": lambda: [],
    "record": lambda: [RecordNorms()],
    "record-clipnorm": lambda: [RecordNorms(), ClipNorm(0.05)],
    "clipvalue-record": lambda: [ClipValue(0.02), RecordNorms()],
}


def _run(cell, x, w, engine, taps, state=None):
    cell.zero_grad()
    x.grad = None
    if engine == "plain":
        out, final = plain_loop(cell, x, state)
    else:
        out, final = bptt.unroll(cell, x, state=state, taps=taps, engine=engine)
    loss_of(out, final, w).backward()
    return out.detach(), grads_of(cell, x)


def _inputs(gen, batch=4, steps=11, features=3, hidden=5):
    x = torch.randn(batch, steps, features, generator=gen, dtype=DT, requires_grad=True)
    w = torch.randn(batch, steps, hidden, generator=gen, dtype=DT)
    return x, w


@pytest.mark.parametrize("kind", CELL_KINDS)
@pytest.mark.parametrize("taps_name", TAP_SETS)
def test_fast_equals_generic(kind, taps_name, gen):
    _assert_fast_equals_generic(kind, taps_name, gen)


def _assert_fast_equals_generic(kind, taps_name, gen):
    """Outputs, every gradient and every RecordNorms' norms, fast against generic."""
    cell = make_cell(kind)
    x, w = _inputs(gen)
    taps_g, taps_f = TAP_SETS[taps_name](), TAP_SETS[taps_name]()
    out_g, grads_g = _run(cell, x, w, "generic", taps_g)
    out_f, grads_f = _run(cell, x, w, "fast", taps_f)
    torch.testing.assert_close(out_f, out_g, rtol=0, atol=OUT_ATOL)
    for a, b in zip(grads_f, grads_g, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=GRAD_ATOL)
    for tap_g, tap_f in zip(taps_g, taps_f, strict=True):
        if isinstance(tap_g, RecordNorms):
            torch.testing.assert_close(tap_f.norms, tap_g.norms, rtol=0, atol=GRAD_ATOL)
            assert torch.isfinite(tap_f.norms).all()  # every step recorded


@pytest.mark.parametrize("kind", CELL_KINDS)
@pytest.mark.parametrize("engine", ["generic", "fast", "auto"])
def test_without_taps_every_engine_equals_the_plain_loop(kind, engine, gen):
    cell = make_cell(kind)
    x, w = _inputs(gen)
    out_p, grads_p = _run(cell, x, w, "plain", [])
    out_e, grads_e = _run(cell, x, w, engine, [])
    torch.testing.assert_close(out_e, out_p, rtol=0, atol=OUT_ATOL)
    for a, b in zip(grads_e, grads_p, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=GRAD_ATOL)


class _HookReference:
    """Per-component reference taps on a plain loop, via tensor hooks."""

    def __init__(self, steps: int, parts: int, clip_value: float | None = None):
        self.norms = [[None] * parts for _ in range(steps)]
        self.clip_value = clip_value

    def __call__(self, t: int, k: int, grad: torch.Tensor) -> torch.Tensor:
        if self.clip_value is not None:
            grad = grad.clamp(-self.clip_value, self.clip_value)
        self.norms[t][k] = grad.norm(dim=1)
        return grad

    def total_norms(self) -> torch.Tensor:
        per_step = [torch.stack(parts).pow(2).sum(0).sqrt() for parts in self.norms]
        return torch.stack(per_step, dim=1)  # (B, T)


@pytest.mark.parametrize("kind", CELL_KINDS)
@pytest.mark.parametrize("engine", ["generic", "fast"])
@pytest.mark.parametrize("clip_value", [None, 0.02])
def test_record_and_clip_value_match_a_hook_reference(kind, engine, clip_value, gen):
    cell = make_cell(kind)
    x, w = _inputs(gen)
    ref = _HookReference(x.shape[1], 2 if kind == "lstm" else 1, clip_value)
    out, final = plain_loop(cell, x, hooks=ref)
    loss_of(out, final, w).backward()
    ref_grads = grads_of(cell, x)

    taps = ([ClipValue(clip_value)] if clip_value else []) + [RecordNorms()]
    _, grads = _run(cell, x, w, engine, taps)
    torch.testing.assert_close(taps[-1].norms, ref.total_norms(), rtol=0, atol=GRAD_ATOL)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=GRAD_ATOL)


@pytest.mark.parametrize("kind", ["rnn-tanh", "rnn-relu", "gru"])
@pytest.mark.parametrize("engine", ["generic", "fast"])
def test_clip_norm_matches_a_hook_reference(kind, engine, gen):
    max_norm = 0.05
    cell = make_cell(kind)
    x, w = _inputs(gen)

    def clip(t, k, grad):
        norm = grad.norm(dim=1, keepdim=True)
        return grad * torch.where(norm > max_norm, max_norm / norm, 1.0)

    out, final = plain_loop(cell, x, hooks=clip)
    loss_of(out, final, w).backward()
    ref_grads = grads_of(cell, x)
    record = RecordNorms()
    _, grads = _run(cell, x, w, engine, [ClipNorm(max_norm), record])
    assert record.norms.max() <= max_norm * (1 + 1e-12)  # up to rounding
    assert record.norms.max() > 0.9 * max_norm  # the bound was active
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=GRAD_ATOL)


@pytest.mark.parametrize("lam", [0.8, 1.0, 1.05])
def test_recorded_norms_scale_as_lambda_to_the_distance(lam, gen):
    """W = lambda * Q, Q orthogonal: ||dL/dh_{T-1-d}|| = lambda^d exactly."""
    hidden, steps = 6, 30
    q, _ = torch.linalg.qr(torch.randn(hidden, hidden, generator=gen, dtype=DT))
    cell = LinearCell(lam * q, input_size=2)
    x = torch.randn(3, steps, 2, generator=gen, dtype=DT)
    u = torch.randn(hidden, generator=gen, dtype=DT)
    u /= u.norm()
    record = RecordNorms()
    out, _ = bptt.unroll(cell, x, taps=[record])
    (out[:, -1] @ u).sum().backward()
    expected = torch.tensor([lam ** (steps - 1 - t) for t in range(steps)], dtype=DT)
    # Q is orthogonal to ~H eps; 30 steps of H-term products: relative error < 30 (H + 2) eps
    # = 5e-14, far inside 1e-10; a rate off by 1e-6 already misses by 3e-5
    torch.testing.assert_close(record.norms, expected.expand(3, -1), rtol=1e-10, atol=0)


def test_user_cell_with_tuple_state_and_taps_runs_and_trains(gen):
    """A user's own cell with a tuple state works through unroll and SequenceModel."""

    class TwoTrack(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden_size = 4
            self.fast = nn.Linear(1 + 4, 4, dtype=DT)
            self.slow = nn.Linear(4, 4, dtype=DT)

        def initial_state(self, batch_size, *, device=None, dtype=None):
            z = torch.zeros(batch_size, 4, device=device, dtype=dtype)
            return z, z.clone()

        def forward(self, x_t, state):
            h, m = state
            h = torch.tanh(self.fast(torch.cat([x_t, h], 1)) + self.slow(m))
            return h, 0.9 * m + 0.1 * h

    cell = TwoTrack()
    record = RecordNorms()
    model = bptt.SequenceModel(cell, 1)
    x = torch.randn(32, 6, 1, generator=gen, dtype=DT)
    y = x.sum(1)  # (B, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        pred, _ = model(x, taps=[record])
        loss = nn.functional.mse_loss(pred, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert record.norms.shape == (32, 6)
    assert torch.isfinite(record.norms).all()
    assert losses[-1] < 0.1 * losses[0]


def test_auto_picks_fast_for_builtin_cells_and_generic_for_others(gen):
    x = torch.randn(2, 3, 3, generator=gen, dtype=DT, requires_grad=True)
    out, _ = bptt.unroll(make_cell("gru"), x)
    assert "GRUSequence" in type(out.grad_fn).__name__ or "GRUSequence" in str(out.grad_fn)
    out, _ = bptt.unroll(make_cell("gru"), x, engine="generic")
    assert "GRUSequence" not in str(out.grad_fn)

    class Sub(bptt.cells.RNNCell):  # a subclass may change forward: never the fast path
        pass

    with pytest.raises(ValueError, match="engine='fast'"):
        bptt.unroll(Sub(3, 4, dtype=DT), x, engine="fast")


@pytest.mark.parametrize("kind", CELL_KINDS)
def test_fast_engine_without_grad_matches_and_leaves_no_graph(kind, gen):
    cell = make_cell(kind)
    x = torch.randn(2, 7, 3, generator=gen, dtype=DT)
    with torch.no_grad():
        fast, _ = bptt.unroll(cell, x, engine="fast")
    generic, _ = bptt.unroll(cell, x, engine="generic")
    assert fast.grad_fn is None
    torch.testing.assert_close(fast, generic.detach(), rtol=0, atol=OUT_ATOL)


@pytest.mark.parametrize("kind", CELL_KINDS)
def test_interleaved_graphs_do_not_share_scratch_buffers(kind, gen):
    """Two live graphs, backward in another order than forward, a third forward between."""
    cell = make_cell(kind)
    xs = [torch.randn(3, 8, 3, generator=gen, dtype=DT) for _ in range(3)]
    expected = []
    for x in xs[:2]:
        cell.zero_grad()
        out, _ = bptt.unroll(cell, x, engine="generic")
        out.pow(2).sum().backward()
        expected.append(grads_of(cell))
    outs = [bptt.unroll(cell, x, engine="fast")[0] for x in xs[:2]]
    cell.zero_grad()
    outs[0].pow(2).sum().backward()
    got0 = grads_of(cell)
    bptt.unroll(cell, xs[2], engine="fast")[0].sum().backward()  # reuses released buffers
    cell.zero_grad()
    outs[1].pow(2).sum().backward()
    got1 = grads_of(cell)
    for got, exp in ((got0, expected[0]), (got1, expected[1])):
        for a, b in zip(got, exp, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=GRAD_ATOL)


def test_second_backward_through_fast_engine_is_refused(gen):
    x = torch.randn(2, 4, 3, generator=gen, dtype=DT)
    out, _ = bptt.unroll(make_cell("lstm"), x, engine="fast")
    loss = out.sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="engine='generic'"):
        loss.backward()


def test_initial_state_gradient_flows_through_both_engines(gen):
    cell = make_cell("lstm")
    x = torch.randn(2, 5, 3, generator=gen, dtype=DT)
    grads = []
    for engine in ("generic", "fast"):
        h0 = torch.randn(2, 5, generator=torch.Generator().manual_seed(1), dtype=DT)
        c0 = torch.randn(2, 5, generator=torch.Generator().manual_seed(2), dtype=DT)
        h0.requires_grad_()
        c0.requires_grad_()
        out, (_, c) = bptt.unroll(cell, x, state=(h0, c0), engine=engine)
        (out.sum() + c.sum()).backward()
        grads.append((h0.grad, c0.grad))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=GRAD_ATOL)


@pytest.mark.parametrize(
    ("x", "kwargs", "error", "message"),
    [
        (torch.zeros(2, 3), {}, ValueError, r"\(B, T, F\)"),
        (torch.zeros(2, 0, 3), {}, ValueError, "at least one"),
        (torch.zeros(2, 4, 7), {}, ValueError, "expected \\(B, T, 3\\)"),
        (torch.zeros(2, 4, 3, dtype=torch.long), {}, ValueError, "floating"),
        (torch.zeros(2, 4, 3), {"engine": "turbo"}, ValueError, "engine"),
        (torch.zeros(2, 4, 3), {"taps": [3]}, TypeError, "callable"),
        (torch.zeros(2, 4, 3), {"state": torch.zeros(5, 4)}, ValueError, "2 samples"),
    ],
)
def test_bad_input_gets_a_clear_error(x, kwargs, error, message):
    with pytest.raises(error, match=message):
        bptt.unroll(bptt.cells.RNNCell(3, 4), x, **kwargs)


def test_a_tap_that_changes_the_structure_is_reported(gen):
    x = torch.randn(2, 4, 3, generator=gen, dtype=DT)
    out, _ = bptt.unroll(make_cell("lstm"), x, taps=[lambda t, d: d[0]])
    with pytest.raises(TypeError, match="structure"):
        out.sum().backward()


def test_record_norms_marks_unreached_steps_nan(gen):
    record = RecordNorms()
    with pytest.raises(RuntimeError, match="no norms"):
        _ = record.norms
    cell = make_cell("rnn-tanh")
    x = torch.randn(2, 4, 3, generator=gen, dtype=DT)
    out, _ = bptt.unroll(cell, x, taps=[record], engine="generic")
    out[:, 2].sum().backward()  # steps 0..2 get a gradient; in the generic engine step 3 too
    assert torch.isfinite(record.norms[:, :3]).all()
    assert math.isclose(record.norms[:, 3].abs().sum().item(), 0.0)


def test_fast_outputs_refuse_in_place_edits_before_backward(gen):
    """The fast engine's outputs view the buffer its backward reads: an edit must not
    silently change the gradient."""
    x = torch.randn(2, 5, 3, generator=gen, dtype=DT)
    for kind in CELL_KINDS:
        out, final = bptt.unroll(make_cell(kind), x, engine="fast")
        with torch.no_grad():
            out.zero_()
        last = final[0] if isinstance(final, tuple) else final
        with pytest.raises(RuntimeError, match="inplace"):
            last.sum().backward()


@pytest.mark.parametrize("kind", CELL_KINDS)
@pytest.mark.parametrize("grad", [True, False])
def test_nothing_is_read_from_a_buffer_after_it_went_back_to_the_pool(kind, grad, gen, monkeypatch):
    """Another thread may take a pooled buffer at once: poison every buffer as it is
    given back, and the results must not change."""
    from bptt._kernels._workspace import WORKSPACE, Workspace

    def poisoning_give(self, *buffers):
        for buffer in buffers:
            buffer.fill_(math.nan)
        Workspace.give.__wrapped__(self, *buffers)

    poisoning_give.__wrapped__ = Workspace.give
    monkeypatch.setattr(Workspace, "give", poisoning_give)
    WORKSPACE.clear()
    cell = make_cell(kind)
    x, w = _inputs(gen)
    out_g, grads_g = _run(cell, x, w, "generic", [RecordNorms()])
    with torch.set_grad_enabled(grad):
        out_f, final_f = bptt.unroll(cell, x, taps=[RecordNorms()], engine="fast")
        if grad:
            cell.zero_grad()
            x.grad = None
            loss_of(out_f, final_f, w).backward()
            for a, b in zip(grads_of(cell, x), grads_g, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=GRAD_ATOL)
    torch.testing.assert_close(out_f.detach(), out_g, rtol=0, atol=OUT_ATOL)
    _, final_g = bptt.unroll(cell, x, engine="generic")
    for a, b in zip(
        final_f if isinstance(final_f, tuple) else (final_f,),
        final_g if isinstance(final_g, tuple) else (final_g,),
        strict=True,
    ):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=OUT_ATOL)
    WORKSPACE.clear()


@pytest.mark.parametrize(
    ("kind", "state", "message"),
    [
        ("rnn-tanh", torch.zeros(2, 1, dtype=DT), "expects"),
        ("rnn-tanh", torch.zeros(2, 5), "dtype"),
        ("lstm", torch.zeros(2, 5, dtype=DT), "tuple"),
    ],
)
def test_a_state_of_the_wrong_shape_or_dtype_is_refused(kind, state, message):
    with pytest.raises(ValueError, match=message):
        bptt.unroll(make_cell(kind), torch.zeros(2, 4, 3, dtype=DT), state=state)


@pytest.mark.parametrize("engine", ["auto", "generic"])
def test_an_input_of_another_dtype_than_the_cell_is_a_clear_error(engine):
    # found by hypothesis: a float64 input to a float32 cell fell through to the generic
    # engine and failed inside the cell with torch's matmul message
    cell = bptt.cells.GRUCell(3, 4)
    with pytest.raises(ValueError, match=r"x has dtype torch.float64 but the cell's parameters"):
        bptt.unroll(cell, torch.zeros(1, 1, 3, dtype=torch.float64), engine=engine)


@pytest.mark.parametrize(
    "cell",
    [
        bptt.cells.LSTMCell(2, 4, dtype=torch.float64),
        bptt.cells.GRUCell(2, 4, dtype=torch.float64),
        bptt.cells.RNNCell(2, 4, dtype=torch.float64),
        bptt.cells.LRUCell(2, 4, dtype=torch.float64),
        bptt.cells.MinGRUCell(2, 4, dtype=torch.float64),
    ],
    ids=lambda c: type(c).__name__,
)
def test_a_second_derivative_through_a_fast_engine_is_refused_not_silently_wrong(cell):
    x = torch.randn(2, 5, 2, dtype=torch.float64, requires_grad=True)
    outputs, _ = bptt.unroll(cell, x)
    # a loss linear in the outputs: torch's once_differentiable alone would let this
    # through and treat the backward's result as a constant
    with pytest.raises(RuntimeError, match="no derivative of its own"):
        torch.autograd.grad(outputs.sum(), x, create_graph=True)
    generic, _ = bptt.unroll(cell, x, engine="generic")
    (grad,) = torch.autograd.grad(generic.sum(), x, create_graph=True)
    assert grad.requires_grad  # the generic engine differentiates twice


@pytest.mark.parametrize("kind", CELL_KINDS)
@pytest.mark.parametrize("taps_name", ["record", "record-clipnorm"])
def test_a_backward_of_many_chunks_equals_the_generic_engine(kind, taps_name, gen, monkeypatch):
    """The fast backward walks back in chunks, takes a lone RecordNorms' norms and sums the
    weight, bias and input gradients a few chunks at a time: with chunks of 1-2 steps and
    sums every 3 steps (boundaries that do not line up), the same as the generic engine."""
    from bptt._kernels import _common

    monkeypatch.setattr(_common, "_CHUNK_ELEMENTS", 50)  # B H = 20 to 4 B H = 80 per step
    monkeypatch.setattr(_common, "_GRAD_ROWS", 12)  # B = 4: every 3 steps
    _assert_fast_equals_generic(kind, taps_name, gen)


@pytest.mark.parametrize("kind", CELL_KINDS)
def test_tanh_taken_directly_equals_the_generic_engine(kind, gen, monkeypatch):
    """Off the CPU (a GPU) the loops take tanh itself, not 2 sigmoid(2a) - 1: that branch,
    forced here on the CPU, against the generic engine."""
    from bptt._kernels import _elman, _gru, _lstm

    for module in (_elman, _gru, _lstm):
        monkeypatch.setattr(module, "tanh_via_sigmoid", lambda device: False)
    cell = make_cell(kind)
    x, w = _inputs(gen)
    taps_g, taps_f = TAP_SETS["record"](), TAP_SETS["record"]()
    out_g, grads_g = _run(cell, x, w, "generic", taps_g)
    out_f, grads_f = _run(cell, x, w, "fast", taps_f)
    torch.testing.assert_close(out_f, out_g, rtol=0, atol=OUT_ATOL)
    for a, b in zip(grads_f, grads_g, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=GRAD_ATOL)


@pytest.mark.parametrize("kind", ["rnn-tanh", "lstm", "gru"])
@pytest.mark.parametrize("scale", [1.0, 0.01])
def test_tanh_via_sigmoid_errs_by_its_absolute_bound_in_float32(kind, scale, gen):
    """In float32 on the CPU the fast loops take tanh(a) as 2 sigmoid(2a) - 1, whose
    error is absolute: sigmoid within 2 units of its result (< 1, so 2 * 2^-24 absolute),
    doubled, plus the subtraction's half unit of 1: 3e-7 a tanh (the LSTM takes two a
    step). Over T = 60 steps, with no credit for the recurrence's contraction, the fast
    engine's outputs and W_hh gradient stay within the generic engine's own float32
    error plus T * tanh-per-step * 3e-7 of the largest value, at unit scale and with
    inputs and weights scaled by 0.01 (states of order 0.01, where the error is that
    absolute one, about 1e-5 relative). A missing doubling or halving errs by order 1."""
    cell64 = make_cell(kind, hidden_size=16)
    with torch.no_grad():
        for p in cell64.parameters():
            p.mul_(scale)
    cell32 = make_cell(kind, hidden_size=16, dtype=torch.float32)
    cell32.load_state_dict({k: v.float() for k, v in cell64.state_dict().items()})
    x = scale * torch.randn(8, 60, 3, generator=gen, dtype=DT)
    w = torch.randn(8, 60, 16, generator=gen, dtype=DT)

    def run(cell, engine, dtype):
        cell.zero_grad()
        out, _ = bptt.unroll(cell, x.to(dtype), engine=engine)
        (out * w.to(dtype)).sum().backward()
        return [out.detach().double(), cell.weight_hh.grad.double()]

    reference = run(cell64, "generic", DT)
    generic = run(cell32, "generic", torch.float32)
    fast = run(cell32, "fast", torch.float32)
    per_tanh = 2 * 2.0**-24 * 2 + 2.0**-25
    identity = 60 * (2 if kind == "lstm" else 1) * per_tanh  # absolute, on the states
    (ref_out, ref_grad), (g_out, g_grad), (f_out, f_grad) = reference, generic, fast
    assert (f_out - ref_out).abs().max() <= (g_out - ref_out).abs().max() + identity
    # dL/dW_hh sums delta_t h_{t-1}^T: states off by `identity` move it by that much
    # relative to the states' typical size
    relative = identity / ref_out.abs().mean()
    bound = (g_grad - ref_grad).abs().max() + relative * ref_grad.abs().max()
    assert (f_grad - ref_grad).abs().max() <= bound


@pytest.mark.parametrize("kind", ["rnn-tanh", "lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_takes_tanh_itself(kind, dtype, gen):
    """In bfloat16 and float16 the subtraction in 2 sigmoid(2a) - 1 would cancel most of
    their bits: the fast loops take tanh there, and agree with the generic engine as two
    evaluations in that precision do (T = 20 steps, a few roundings of ~1 each)."""
    cell = make_cell(kind, hidden_size=8, dtype=dtype)
    x = torch.randn(4, 20, 3, generator=gen).to(dtype)
    fast, _ = bptt.unroll(cell, x, engine="fast")
    generic, _ = bptt.unroll(cell, x, engine="generic")
    eps = torch.finfo(dtype).eps
    assert (fast.float() - generic.float()).abs().max() <= 20 * 8 * eps
