"""What used to go wrong without a word: a NaN step applied, a NaN probe judged, a
negative bound turning the gradient around, a user cell refused for a state it was
given; and raw errors from deep inside torch that did not say which argument was bad.
Each test is named after what it protects; where values are checked they are checked
against a plain autograd reference, and where parameters must not move, bit for bit."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

import bptt
from bptt import _checks
from bptt.clip import Fixed, clip_grad_norm_, clip_grad_norm_per_parameter_
from bptt.diagnose import (
    Monitor,
    diagnose,
    gradient_by_distance,
    jacobian_norms,
    jacobian_product_norms,
)
from bptt.optim import HessianFree, conjugate_gradient
from helpers import plain_loop

DT = torch.float64


def _bits(module: nn.Module) -> list[torch.Tensor]:
    """Every parameter's bit pattern: equal only if bit for bit equal (-0.0 != 0.0, and
    a NaN equals itself)."""
    out = []
    for p in module.parameters():
        data = p.detach().clone()
        out.append(data.view(torch.int64) if data.dtype == DT else data.view(torch.int32))
    return out


def _same_bits(before: list[torch.Tensor], module: nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(before, _bits(module), strict=True))


def _refused(call, error: type[Exception], name: str) -> str:
    """call() must raise exactly ``error`` whose one-line message names ``name``."""
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    message = str(info.value)
    assert type(info.value) is error, (type(info.value), message)
    assert re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", message), (name, message)
    assert "\n" not in message
    return message


# --- 5. Hessian-free: a rejected step puts the parameters back exactly ----------------------


def _regression(dtype=torch.float32):
    torch.manual_seed(0)
    model = bptt.SequenceModel(bptt.cells.RNNCell(2, 8, dtype=dtype), 1)
    return model, _closure_for(model, dtype)


def _closure_for(model: nn.Module, dtype=torch.float32):
    """The regression closure of :func:`_regression` for ``model`` (the same data)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 6, 2, generator=gen, dtype=dtype)
    y = x.sum((1, 2)).unsqueeze(1)  # (B, 1)

    def closure(scale: float = 1.0):
        prediction = model(x)[0]
        return nn.functional.mse_loss(prediction, y) * scale, prediction

    return closure


def test_a_hf_step_on_a_nan_closure_leaves_the_parameters_bit_for_bit():
    model, closure = _regression()
    hf = HessianFree(model.parameters())
    before = _bits(model)
    loss = hf.step(lambda: closure(math.nan))
    assert math.isnan(float(loss))
    assert _same_bits(before, model)
    assert hf.last["alpha"] == 0.0 and hf.last["damping"] == 1.0  # nothing was learnt
    assert all("cg_solution" not in hf.state[p] for p in model.parameters())
    hf.step(closure)  # a healthy step afterwards starts afresh and moves
    assert hf.last["alpha"] > 0 and hf.last["loss_after"] < hf.last["loss_before"]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_hf_step_under_a_huge_damping_never_applies_a_non_finite_direction():
    model, closure = _regression()
    hf = HessianFree(model.parameters(), damping=1e300)  # the CG products overflow
    before = _bits(model)
    hf.step(closure)
    assert _same_bits(before, model)
    assert hf.last["alpha"] == 0.0
    assert hf.last["loss_after"] == hf.last["loss_before"]
    assert all(torch.isfinite(s).all() for p in model.parameters() for s in hf.state[p].values())


def test_a_hf_step_whose_line_search_fails_restores_the_parameters_bit_for_bit():
    model, closure = _regression(DT)
    with torch.no_grad():  # p0 + 0 * d would turn -0.0 into 0.0 wherever d > 0
        for p in model.parameters():
            p.view(-1)[:2] = -0.0
    start = [p.detach().clone() for p in model.parameters()]

    def kinked():  # any move at all costs more than it gains: |p - p0| has slope 0 at p0
        loss, outputs = closure()
        penalty = sum((p - s).abs().sum() for p, s in zip(model.parameters(), start, strict=True))
        return loss + 1e6 * penalty, outputs

    hf = HessianFree(model.parameters())
    before = _bits(model)
    hf.step(kinked)
    assert hf.last["alpha"] == 0.0 and hf.last["loss_after"] == hf.last["loss_before"]
    assert hf.last["cg_iters"] >= 1  # a finite direction was found, and refused
    assert _same_bits(before, model)


def test_a_hf_step_whose_trial_raises_leaves_the_parameters_bit_for_bit():
    model, closure = _regression()
    calls = []

    def fails_on_trial():  # the first call (with the graph) works, the first trial fails
        calls.append(1)
        return closure() if len(calls) == 1 else "no tuple"

    hf = HessianFree(model.parameters())
    before = _bits(model)
    _refused(lambda: hf.step(fails_on_trial), TypeError, "closure")
    assert len(calls) == 2 and _same_bits(before, model)


def test_a_hf_step_whose_last_trial_raises_puts_back_the_damping_and_the_warm_start():
    def first_step():  # the same model and optimizer after one step, each time
        model, closure = _regression()
        hf = HessianFree(model.parameters())
        hf.step(closure)  # stores a warm start
        return model, closure, hf

    # a rehearsal: how many calls the second step makes, and that it moves the damping
    # before its last trial (so the restore below is put to the test)
    model, closure, hf = first_step()
    damping = hf.param_groups[0]["damping"]
    count = []
    hf.step(lambda: count.append(1) or closure())
    assert hf.param_groups[0]["damping"] != damping
    model, closure, hf = first_step()
    assert hf.param_groups[0]["damping"] == damping
    warm = [hf.state[p]["cg_solution"].clone() for p in model.parameters()]
    calls = []

    def fails_last():
        calls.append(1)
        if len(calls) == len(count):
            raise RuntimeError("the closure failed at the trial parameters")
        return closure()

    before = _bits(model)
    with pytest.raises(RuntimeError, match="trial parameters"):
        hf.step(fails_last)
    assert _same_bits(before, model) and hf.param_groups[0]["damping"] == damping
    for p, w in zip(model.parameters(), warm, strict=True):
        assert torch.equal(hf.state[p]["cg_solution"], w)


def test_hf_cross_entropy_refuses_a_regression_closure_before_any_change():
    model, closure = _regression()
    hf = HessianFree(model.parameters(), loss="cross_entropy")
    before = _bits(model)
    message = _refused(lambda: hf.step(closure), ValueError, "loss")
    assert "(16, 1)" in message and "loss='mse'" in message
    # scores of several "classes", but a squared error on float targets
    torch.manual_seed(0)
    wide = bptt.SequenceModel(bptt.cells.RNNCell(2, 8), 3)
    x = torch.randn(16, 6, 2, generator=torch.Generator().manual_seed(2))
    targets = torch.randn(16, 3, generator=torch.Generator().manual_seed(3))

    def regression():
        prediction = wide(x)[0]
        return nn.functional.mse_loss(prediction, targets), prediction

    def classification():
        prediction = wide(x)[0]
        return nn.functional.cross_entropy(prediction, torch.arange(16) % 3), prediction

    hf_wide = HessianFree(wide.parameters(), loss="cross_entropy")
    wide_before = _bits(wide)
    _refused(lambda: hf_wide.step(regression), ValueError, "loss")
    assert _same_bits(wide_before, wide) and _same_bits(before, model)
    hf_wide.step(classification)  # the real thing is accepted, and learns
    assert hf_wide.last["loss_after"] < hf_wide.last["loss_before"]


def test_hf_accepts_the_cross_entropy_of_a_model_sure_of_every_answer():
    """A model that has solved its task gives every row of scores a softmax of 1 at the
    target and 1e-13 elsewhere: in float32 the gradient rows then sum to rounding, not to
    0 (seen in a temporal-order run at T=100 that the check stopped after solving it).
    The check's slack covers a softmax's rounding; a regression is still refused above."""
    torch.manual_seed(0)
    model = bptt.SequenceModel(bptt.cells.RNNCell(2, 8), 4)
    x = torch.randn(64, 6, 2, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(64) % 4
    with torch.no_grad():  # the readout's bias alone decides: +30 at the label's class
        model.head.weight.zero_()
    shift = 30.0 * nn.functional.one_hot(labels, 4)

    def sure():
        prediction = model(x)[0] + shift
        return nn.functional.cross_entropy(prediction, labels), prediction

    loss, prediction = sure()
    (grad,) = torch.autograd.grad(loss, prediction)
    sums, sizes = grad.double().sum(-1).abs(), grad.double().abs().sum(-1)
    assert bool((sums > 1e-3 * sizes + 1e-6 * sizes.max()).any())  # the old slack refused it
    HessianFree(model.parameters(), loss="cross_entropy").step(sure)  # accepted


# --- 6. a diagnosis refuses a bad probe and settings that measure nothing --------------


def test_diagnose_refuses_a_non_finite_probe_naming_x():
    cell = bptt.cells.RNNCell(1, 8, dtype=DT)
    for poison in (math.nan, math.inf):
        x = torch.randn(4, 20, 1, generator=torch.Generator().manual_seed(0), dtype=DT)
        x[2, 7, 0] = poison
        message = _refused(lambda x=x: diagnose(cell, x), ValueError, "x")
        assert "sample 2, step 7" in message and "not the model" in message
        _refused(lambda x=x: gradient_by_distance(cell, x), ValueError, "x")
        _refused(lambda x=x: jacobian_norms(cell, x), ValueError, "x")


@pytest.mark.parametrize(("iters", "error"), [(0, ValueError), (-1, ValueError), (2.5, TypeError)])
def test_iters_that_would_measure_nothing_are_refused_wherever_accepted(iters, error):
    cell = bptt.cells.GRUCell(2, 4, dtype=DT)
    x = torch.randn(2, 6, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    _refused(lambda: diagnose(cell, x, iters=iters), error, "iters")
    _refused(lambda: jacobian_norms(cell, x, iters=iters), error, "iters")
    _refused(lambda: jacobian_product_norms(cell, x, 2, iters=iters), error, "iters")
    assert (jacobian_norms(cell, x, iters=1) > 0).all()  # one iteration measures


@pytest.mark.parametrize(
    ("length", "error"), [(2.5, TypeError), (0, ValueError), (-3, ValueError), (True, TypeError)]
)
def test_dependency_length_must_be_an_integer_of_at_least_one(length, error):
    cell = bptt.cells.RNNCell(1, 4, dtype=DT)
    x = torch.randn(2, 8, 1, generator=torch.Generator().manual_seed(0), dtype=DT)
    _refused(lambda: diagnose(cell, x, dependency_length=length), error, "dependency_length")
    assert diagnose(cell, x, dependency_length=20).numbers["dependency_length"] == 20


# --- 7. clipping and TBPTT: no gradient ascent, no NaN update ------------------------------


def _with_grads(*grads: list[float]) -> list[nn.Parameter]:
    params = []
    for g in grads:
        p = nn.Parameter(torch.zeros(len(g), dtype=DT))
        p.grad = torch.tensor(g, dtype=DT)
        params.append(p)
    return params


@pytest.mark.parametrize(
    "bound", [-1.0, -math.inf, math.nan, torch.tensor([1.0, -1.0], dtype=DT), "1"]
)
def test_per_parameter_clipping_refuses_a_bound_that_would_reverse_the_gradient(bound):
    params = _with_grads([3.0, 4.0], [0.5, 0.0])
    error = TypeError if isinstance(bound, str) else ValueError
    _refused(lambda: clip_grad_norm_per_parameter_(params, bound), error, "max_norm")
    assert params[0].grad.tolist() == [3.0, 4.0] and params[1].grad.tolist() == [0.5, 0.0]
    if not isinstance(bound, (str, torch.Tensor)):  # the same rule in the global clip
        _refused(lambda: clip_grad_norm_(params, bound), ValueError, "max_norm")


def test_per_parameter_clipping_with_zero_and_inf_bounds_does_what_torch_does():
    ours = _with_grads([3.0, 4.0], [0.5, 0.0])
    theirs = _with_grads([3.0, 4.0], [0.5, 0.0])
    clip_grad_norm_per_parameter_(ours, 0.0)
    torch.nn.utils.clip_grad_norm_(theirs, 0.0)  # torch zeroes the gradient at 0
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a.grad, b.grad) and not a.grad.any()
    kept = _with_grads([3.0, 4.0])
    norms = clip_grad_norm_per_parameter_(kept, math.inf)
    assert kept[0].grad.tolist() == [3.0, 4.0] and norms.tolist() == [5.0]


def _stream_model():
    torch.manual_seed(0)
    return bptt.SequenceModel(bptt.cells.GRUCell(1, 4, dtype=DT), 1, readout="all")


def test_tbptt_skips_and_counts_updates_on_a_nan_stream_leaving_the_parameters():
    model = _stream_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = bptt.TBPTT(model, 5, 5, nn.functional.mse_loss, opt)
    gen = torch.Generator().manual_seed(1)
    clean = torch.randn(2, 10, 1, generator=gen, dtype=DT)
    initial = _bits(model)
    rows = trainer.fit(clean, clean)
    assert [r["skipped"] for r in rows] == [False, False] and not _same_bits(initial, model)
    before_bad = _bits(model)
    poisoned = torch.randn(2, 15, 1, generator=gen, dtype=DT)
    poisoned[1, 0, 0] = math.nan  # the first step of the next window
    with pytest.warns(RuntimeWarning, match="skipped") as caught:
        rows = trainer.step(poisoned, poisoned)
    assert len(caught) == 1  # warned once for three skipped updates
    assert [r["skipped"] for r in rows] == [True, True, True] and trainer.skipped == 3
    assert trainer.updates == 5 and all(math.isnan(r["loss"]) for r in rows)
    assert _same_bits(before_bad, model)
    assert all(torch.isfinite(p).all() and p.grad is None for p in model.parameters())
    assert trainer.state_dict()["skipped"] == 3


def test_constructors_refuse_bad_arguments_by_name():
    model = _stream_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mse = nn.functional.mse_loss
    _refused(lambda: bptt.cells.SkipRNNCell(0, 8), ValueError, "input_size")
    _refused(lambda: bptt.TBPTT(model, 2, 4, None, opt), TypeError, "loss_fn")
    _refused(lambda: bptt.TBPTT(model, 2, 4, mse, 5), TypeError, "optimizer")
    _refused(lambda: bptt.TBPTT(model, 2, 4, mse, opt, taps=[3]), TypeError, "taps[0]")
    _refused(lambda: bptt.TBPTT(model, 2, 4, mse, opt, clip=3), TypeError, "clip")
    bptt.TBPTT(model, 2, 4, mse, None)  # no optimizer: the caller steps (Lightning)


# --- 9. a plain forward(x_t, h) cell runs from the state it is given ------------------------


class _Plain(nn.Module):
    """A user's cell as it was written before the cell contract: no hidden_size, no
    initial_state, just (x_t, h) -> h."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(5)
        self.w = nn.Parameter(torch.randn(4, 3, generator=gen, dtype=DT) * 0.8)
        self.u = nn.Parameter(torch.randn(4, 4, generator=gen, dtype=DT) * 0.6)

    def forward(self, x_t, h):
        return torch.tanh(x_t @ self.w.t() + h @ self.u.t())


def _plain_case():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(3, 7, 3, generator=gen, dtype=DT)
    h0 = torch.randn(3, 4, generator=gen, dtype=DT)
    return _Plain(), x, h0


def test_a_plain_cell_given_its_state_unrolls_as_a_plain_autograd_loop():
    cell, x, h0 = _plain_case()
    weights = torch.randn(3, 7, 4, generator=torch.Generator().manual_seed(7), dtype=DT)
    out, final = bptt.unroll(cell, x, state=h0)
    ours = torch.autograd.grad((out * weights).sum() + final.sum(), list(cell.parameters()))
    ref_out, ref_final = plain_loop(cell, x, h0)
    theirs = torch.autograd.grad(
        (ref_out * weights).sum() + ref_final.sum(), list(cell.parameters())
    )
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    _refused(lambda: bptt.unroll(cell, x), TypeError, "state=")  # no state: still asked


def test_a_plain_cell_given_its_state_has_the_gradients_by_distance_of_autograd():
    cell, x, h0 = _plain_case()
    weights = torch.randn(4, generator=torch.Generator().manual_seed(8), dtype=DT)

    def loss(outputs, final):
        return (outputs[:, -1] @ weights).sum()

    found = gradient_by_distance(cell, x, h0, loss)
    seen = {}
    outputs, _ = plain_loop(cell, x, h0, hooks=lambda t, k, g: seen.__setitem__(t, g) or g)
    (outputs[:, -1] @ weights).sum().backward()
    by_step = torch.stack([seen[t].norm(dim=1).mean() for t in range(x.shape[1])])
    torch.testing.assert_close(found["norms"], by_step.flip(0), rtol=1e-12, atol=1e-15)
    _refused(lambda: gradient_by_distance(cell, x), TypeError, "state=")


def test_a_plain_cell_given_its_state_has_the_jacobian_norms_of_autograd():
    cell, x, h0 = _plain_case()
    found = jacobian_norms(cell, x, h0, iters=300)
    expected = torch.empty(3, 7, dtype=DT)
    with torch.no_grad():
        h = h0
        for t in range(7):
            for b in range(3):
                jac = torch.autograd.functional.jacobian(
                    lambda s, b=b, t=t: cell(x[b : b + 1, t], s.unsqueeze(0))[0], h[b]
                )
                expected[b, t] = torch.linalg.matrix_norm(jac, ord=2)
            h = cell(x[:, t], h)
    torch.testing.assert_close(found, expected, rtol=1e-8, atol=0)
    _refused(lambda: jacobian_norms(cell, x), TypeError, "state=")


# --- 13. raw errors from inside torch become errors that name the argument ----------------


def test_a_cell_larger_than_the_memory_is_refused_naming_its_size_and_bytes(monkeypatch):
    message = _refused(lambda: bptt.cells.LSTMCell(2, 10**7), ValueError, "hidden_size")
    assert "hidden_size=10000000" in message and "bytes" in message
    # the rule: more parameter bytes than the device's whole memory
    monkeypatch.setattr(_checks, "machine_memory", lambda: 4 * 1000)
    _refused(lambda: bptt.cells.RNNCell(1, 40), ValueError, "hidden_size")  # 40 * 43 floats
    assert bptt.cells.RNNCell(1, 20).hidden_size == 20  # 20 * 23 floats: 1,840 bytes
    _refused(lambda: bptt.cells.SkipRNNCell(1, 40, (1, 2)), ValueError, "hidden_size")
    assert bptt.cells.GRUCell(1, 40, device="meta").hidden_size == 40  # meta holds nothing


def test_skip_cell_sizes_and_skips_are_named():
    _refused(lambda: bptt.cells.SkipRNNCell(2, -1), ValueError, "hidden_size")
    _refused(lambda: bptt.cells.SkipRNNCell(2, 8, 0), TypeError, "skips")
    _refused(lambda: bptt.cells.SkipRNNCell(2, 8, (1, 1)), ValueError, "skips")


def test_unroll_reads_taps_none_as_no_taps_and_names_a_lone_tap():
    cell = bptt.cells.RNNCell(2, 3, dtype=DT)
    x = torch.randn(2, 4, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    none, _ = bptt.unroll(cell, x, taps=None)
    empty, _ = bptt.unroll(cell, x, taps=())
    assert torch.equal(none, empty)
    message = _refused(
        lambda: bptt.unroll(cell, x, taps=bptt.taps.RecordNorms()), TypeError, "taps"
    )
    assert "taps=[tap]" in message


def test_monitor_names_a_missing_model_and_a_loss_that_is_no_scalar():
    _refused(lambda: Monitor(None), TypeError, "model")
    model = nn.Linear(2, 1)
    model(torch.ones(3, 2)).sum().backward()
    monitor = Monitor(model)
    _refused(lambda: monitor.step(0, torch.ones(3)), ValueError, "loss")
    assert monitor.step(0, torch.tensor([[2.0]]))["loss"] == 2.0  # one value, any shape


def test_clip_policies_and_conjugate_gradient_name_what_they_were_given():
    _refused(lambda: Fixed(1.0)(5), TypeError, "parameters")
    _refused(lambda: Fixed(1.0)([torch.zeros(2), "w"]), TypeError, "parameters[1]")
    b = torch.ones(3, dtype=DT)
    _refused(lambda: conjugate_gradient(5, b), TypeError, "product")
    _refused(lambda: conjugate_gradient(lambda v: v[:2], b), ValueError, "product")
    x, _, _ = conjugate_gradient(lambda v: 2 * v, b)
    torch.testing.assert_close(x, b / 2, rtol=1e-14, atol=0)


def test_a_gradient_by_distance_loss_that_is_no_scalar_is_named():
    cell = bptt.cells.RNNCell(2, 3, dtype=DT)
    x = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    _refused(
        lambda: gradient_by_distance(cell, x, loss=lambda out, s: out.sum(-1)), ValueError, "loss"
    )
    _refused(lambda: gradient_by_distance(cell, x, loss=lambda out, s: 1.0), TypeError, "loss")
    _refused(lambda: gradient_by_distance(cell, x, loss="sum"), TypeError, "loss")
