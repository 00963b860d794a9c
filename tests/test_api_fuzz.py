"""Bad arguments to the library's API (Hessian-free, the diagnoses, clipping, AGC, TBPTT,
the cells, the monitor, the taps): a result, or exactly a ValueError or TypeError whose
one-line message names the argument, never an error from deep inside torch or NumPy.
Where a call succeeds, what it returns is checked to be usable (finite)."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import bptt
from bptt.clip import AdaptiveClip, Fixed, adaptive_clip_grad_, clip_grad_norm_per_parameter_
from bptt.diagnose import Monitor, diagnose, gradient_by_distance, jacobian_norms
from bptt.optim import HessianFree, conjugate_gradient

DT = torch.float64
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- values of every kind --------------------------------------------------------------

_DTYPES = [DT, torch.float32, torch.float16, torch.int64, torch.bool, torch.complex64]


@st.composite
def tensors(draw, max_dims: int = 3) -> torch.Tensor:
    """A small tensor of any shape (0-sized axes too) and dtype, sometimes poisoned."""
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=max_dims)))
    dtype = draw(st.sampled_from(_DTYPES))
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=DT).to(dtype)
    poison = draw(st.sampled_from([None, math.nan, math.inf]))
    if poison is not None and x.numel() and dtype.is_floating_point:
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = poison
    return x


# numbers a user might pass by mistake (no huge counts: a huge iteration count is a
# legal, endless request, not a bad argument)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 3),
    st.sampled_from([0.5, -0.5, 1e-12, 1e300, 2.5]),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1.0, -1.0]),
    st.sampled_from(["", "x", "1", "mse", "tanh"]),
    st.sampled_from([np.int64(2), np.float32(0.5), np.float64(math.nan), np.bool_(True)]),
)
anything = st.one_of(
    scalars,
    tensors(),
    st.sampled_from([[1, 2], [[0.5]], (), {}, {"w": 1}, object(), torch.float32]),
)


def _names_it(err: Exception, *names: str) -> None:
    message = str(err)
    assert type(err) in (ValueError, TypeError), repr(err)
    found = any(
        re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", message) is not None for name in names
    )
    assert found, (names, message)
    assert "\n" not in message, message


def _answer(call, *names: str):
    """call() -> its result, or None after an error naming one of ``names``."""
    try:
        return call()
    except (ValueError, TypeError) as err:
        _names_it(err, *names)
        return None


def _finite(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


# --- Hessian-free and conjugate gradient ---------------------------------------------


def _regression():
    torch.manual_seed(0)
    model = bptt.SequenceModel(bptt.cells.RNNCell(2, 3, dtype=DT), 2)
    x = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(1), dtype=DT)
    y = torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=DT)

    def closure():
        prediction = model(x)[0]
        return nn.functional.mse_loss(prediction, y), prediction

    return model, closure


_HF_VALID = {
    "lr": 1.0,
    "loss": "mse",
    "damping": 1.0,
    "mu": 0.0,
    "max_cg": 5,
    "cg_tol": 5e-4,
    "decay": 0.95,
    "preconditioner": False,
}


@FUZZ
@given(name=st.sampled_from(sorted(_HF_VALID)), value=anything)
def test_hessian_free_answers_any_setting(name, value):
    model, closure = _regression()
    kwargs = {**_HF_VALID, name: value}
    hf = _answer(lambda: HessianFree(model.parameters(), **kwargs), name)
    if hf is None:
        return
    if kwargs["loss"] == "cross_entropy":  # a regression closure: refused by name
        with pytest.raises(ValueError) as refused:
            hf.step(closure)
        _names_it(refused.value, "loss")
    else:
        hf.step(closure)
    assert _finite(model)


@FUZZ
@given(loss=anything, outputs=st.one_of(anything, st.just("model")), three=st.booleans())
def test_hessian_free_answers_any_closure_result(loss, outputs, three):
    model, closure = _regression()
    hf = HessianFree(model.parameters(), max_cg=3)

    def odd():
        _, prediction = closure()
        out = prediction if isinstance(outputs, str) and outputs == "model" else outputs
        return (loss, out, prediction) if three else (loss, out)

    before = [p.detach().clone() for p in model.parameters()]
    if _answer(lambda: hf.step(odd), "closure") is None:
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert _finite(model)


_CG_VALID = {
    "product": lambda v: 2.0 * v,
    "b": torch.ones(3, dtype=DT),
    "x0": None,
    "max_iters": 10,
    "tol": 5e-4,
    "min_iters": 1,
    "preconditioner": None,
    "keep": None,
}


@FUZZ
@given(name=st.sampled_from(sorted(_CG_VALID)), value=st.one_of(anything, tensors(max_dims=1)))
def test_conjugate_gradient_answers_any_argument(name, value):
    kwargs = {**_CG_VALID, name: value}
    product, b = kwargs.pop("product"), kwargs.pop("b")
    x0 = kwargs.pop("x0")
    result = _answer(lambda: conjugate_gradient(product, b, x0, **kwargs), name)
    if result is not None:
        x, stored, iterations = result
        assert x.shape == b.shape and torch.isfinite(x).all() and stored[-1][0] == iterations


@FUZZ
@given(returned=st.one_of(anything, tensors(max_dims=2)))
def test_conjugate_gradient_names_a_product_that_returns_the_wrong_thing(returned):
    b = torch.ones(3, dtype=DT)
    result = _answer(lambda: conjugate_gradient(lambda v: returned, b, max_iters=5), "product")
    if result is not None:  # a tensor of b's shape: some answer, the iterate finite
        assert torch.isfinite(result[0]).all()


# --- the diagnoses ------------------------------------------------------------------------


def _probe():
    torch.manual_seed(0)
    cell = bptt.cells.GRUCell(2, 3, dtype=DT)
    x = torch.randn(2, 4, 2, generator=torch.Generator().manual_seed(3), dtype=DT)
    return cell, x


_DIAGNOSE_VALID = {
    "model": None,
    "x": None,
    "dependency_length": None,
    "state": None,
    "iters": 2,
    "seed": 0,
}


@FUZZ
@given(
    name=st.sampled_from(sorted(_DIAGNOSE_VALID)),
    value=st.one_of(anything, tensors(), st.sampled_from([10**400, 2**64, 10**6])),
)
def test_diagnose_answers_any_argument(name, value):
    cell, x = _probe()
    kwargs = {**_DIAGNOSE_VALID, "model": cell, "x": x, name: value}
    if name == "iters" and isinstance(value, int) and value > 100:
        return  # a legal (long) request
    found = _answer(lambda: diagnose(**kwargs), name)
    if found is not None:
        assert found.verdict in ("exploding", "vanishing", "healthy")
        assert found.jacobian is not None and torch.isfinite(found.jacobian).all()


@FUZZ
@given(
    name=st.sampled_from(["x", "state", "seed", "iters", "cell"]),
    value=st.one_of(anything, tensors()),
)
def test_jacobian_norms_and_gradient_by_distance_answer_any_argument(name, value):
    cell, x = _probe()
    kwargs = {"cell": cell, "x": x, "state": None, "seed": 0, name: value}
    if name != "iters":
        found = _answer(lambda: gradient_by_distance(**kwargs), name, "state=")
        if found is not None:
            assert torch.isfinite(found["norms"]).all()
    kwargs.setdefault("iters", 2)
    norms = _answer(lambda: jacobian_norms(**kwargs), name, "state=")
    if norms is not None:
        assert norms.shape == kwargs["x"].shape[:2] and torch.isfinite(norms).all()


@FUZZ
@given(returned=st.one_of(anything, tensors(), st.just("graph")))
def test_gradient_by_distance_names_a_loss_that_returns_the_wrong_thing(returned):
    cell, x = _probe()

    def loss(outputs, final):
        graph = isinstance(returned, str) and returned == "graph"
        return outputs[:, -1].sum() if graph else returned

    found = _answer(lambda: gradient_by_distance(cell, x, loss=loss), "loss")
    if found is not None:
        assert torch.isfinite(found["norms"]).all()


# --- clipping --------------------------------------------------------------------------


def _params_with_grads() -> list[nn.Parameter]:
    params = [nn.Parameter(torch.zeros(2, dtype=DT)), nn.Parameter(torch.zeros(3, dtype=DT))]
    params[0].grad = torch.tensor([3.0, 4.0], dtype=DT)
    params[1].grad = torch.tensor([0.1, 0.2, 0.2], dtype=DT)
    return params


@FUZZ
@given(
    name=st.sampled_from(["parameters", "max_norm", "norm_type", "foreach"]),
    value=st.one_of(anything, tensors(max_dims=1)),
)
def test_per_parameter_clipping_answers_any_argument(name, value):
    params = _params_with_grads()
    kwargs = {"parameters": params, "max_norm": 1.0, "norm_type": 2.0, "foreach": None}
    kwargs[name] = value
    norms = _answer(lambda: clip_grad_norm_per_parameter_(**kwargs), name, "parameters[0]")
    if norms is not None and name != "parameters":
        for p, before in zip(params, [[3.0, 4.0], [0.1, 0.2, 0.2]], strict=True):
            assert torch.isfinite(p.grad).all() or math.isnan(float(kwargs["norm_type"]))
            # never turned around: each element keeps its sign (or becomes 0)
            assert (p.grad * torch.tensor(before, dtype=DT) >= 0).all()


@FUZZ
@given(max_norm=anything, parameters=st.one_of(anything, st.just("params")))
def test_a_fixed_policy_answers_any_bound_and_parameters(max_norm, parameters):
    policy = _answer(lambda: Fixed(max_norm), "max_norm")
    if policy is None:
        return
    params = _params_with_grads() if parameters == "params" else parameters
    norm = _answer(lambda: policy(params), "parameters", "parameters[0]", "parameters[1]")
    if norm is not None:
        assert isinstance(norm, torch.Tensor) and norm.numel() == 1


_AGC_VALID = {"parameters": None, "clipping": 0.01, "eps": 1e-3, "norm_type": 2.0}


@FUZZ
@given(
    name=st.sampled_from(sorted(_AGC_VALID)),
    value=st.one_of(anything, tensors(max_dims=2), st.just(10**400)),
)
def test_adaptive_clipping_answers_any_argument(name, value):
    params = _params_with_grads()
    params[0].data = torch.tensor([0.6, -0.8], dtype=DT)  # one unit with weights, one without
    kwargs = {**_AGC_VALID, "parameters": params, name: value}
    norm = _answer(lambda: adaptive_clip_grad_(**kwargs), name, "parameters[0]")
    if norm is None:
        assert [p.grad.tolist() for p in params] == [[3.0, 4.0], [0.1, 0.2, 0.2]]
        return
    assert isinstance(norm, torch.Tensor) and norm.numel() == 1
    if name != "parameters":  # (the norm itself may overflow: p = 1e-12 is a norm_type)
        for p, before in zip(params, [[3.0, 4.0], [0.1, 0.2, 0.2]], strict=True):
            # finite, and never turned around: each element keeps its sign (or becomes 0)
            assert torch.isfinite(p.grad).all()
            assert (p.grad * torch.tensor(before, dtype=DT) >= 0).all()


@FUZZ
@given(
    name=st.sampled_from(["clipping", "eps", "norm_type", "foreach"]),
    value=anything,
    parameters=st.one_of(anything, st.just("params")),
)
def test_an_adaptive_policy_answers_any_setting_and_parameters(name, value, parameters):
    policy = _answer(lambda: AdaptiveClip(**{name: value}), name)
    if policy is None:
        return
    params = _params_with_grads() if parameters == "params" else parameters
    norm = _answer(lambda: policy(params), "parameters", "parameters[0]", "parameters[1]")
    if norm is not None:
        assert isinstance(norm, torch.Tensor) and norm.numel() == 1
        assert isinstance(policy.threshold, float) and isinstance(policy.clipped, bool)


# --- TBPTT ---------------------------------------------------------------------------------


def _stream():
    torch.manual_seed(0)
    model = bptt.SequenceModel(bptt.cells.RNNCell(1, 3, dtype=DT), 1, readout="all")
    x = torch.randn(2, 7, 1, generator=torch.Generator().manual_seed(4), dtype=DT)
    return model, x


@FUZZ
@given(
    name=st.sampled_from(["model", "k1", "k2", "loss_fn", "optimizer", "clip", "taps"]),
    value=anything,
)
def test_tbptt_answers_any_argument(name, value):
    model, x = _stream()
    kwargs = {
        "model": model,
        "k1": 2,
        "k2": 3,
        "loss_fn": nn.functional.mse_loss,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "clip": None,
        "taps": (),
        name: value,
    }
    trainer = _answer(lambda: bptt.TBPTT(**kwargs), name, *(["taps[0]"] if name == "taps" else []))
    if trainer is None or trainer.optimizer is None:
        return
    rows = trainer.fit(x, x)
    assert all(math.isfinite(r["loss"]) for r in rows) and _finite(model)


@FUZZ
@given(x_chunk=st.one_of(anything, tensors()))
def test_tbptt_answers_any_stream_chunk(x_chunk):
    model, _ = _stream()
    trainer = bptt.TBPTT(model, 2, 3, nn.functional.mse_loss, torch.optim.SGD(model.parameters()))
    y = x_chunk if isinstance(x_chunk, torch.Tensor) else torch.zeros(2, 3, 1, dtype=DT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = _answer(lambda: trainer.step(x_chunk, y), "x_chunk", "y_chunk")
    if rows is None:
        return
    assert _finite(model) and trainer.skipped == sum(r["skipped"] for r in rows)
    # a NaN window is skipped with one warning, and nothing else warns
    assert [type(w.message) for w in caught] == [RuntimeWarning] * (trainer.skipped > 0)


# --- cells ------------------------------------------------------------------------------

_SIZES = st.one_of(scalars, st.sampled_from([10**7, 2**40, 10**400]))


@FUZZ
@given(
    kind=st.sampled_from(["LSTMCell", "RNNCell", "GRUCell"]),
    input_size=_SIZES,
    hidden_size=_SIZES,
)
def test_built_in_cells_answer_any_sizes(kind, input_size, hidden_size):
    cell = _answer(
        lambda: getattr(bptt.cells, kind)(input_size, hidden_size), "input_size", "hidden_size"
    )
    if cell is not None:
        out, _ = bptt.unroll(cell, torch.zeros(1, 2, cell.input_size))
        assert out.shape == (1, 2, cell.hidden_size)


@FUZZ
@given(
    name=st.sampled_from(["input_size", "hidden_size", "skips", "nonlinearity"]),
    value=st.one_of(_SIZES, anything, st.lists(st.integers(-1, 4), max_size=3)),
)
def test_the_skip_cell_answers_any_argument(name, value):
    kwargs = {"input_size": 2, "hidden_size": 3, "skips": (1, 2), "nonlinearity": "tanh"}
    kwargs[name] = value
    cell = _answer(lambda: bptt.cells.SkipRNNCell(**kwargs), name)
    if cell is not None:
        out, _ = bptt.unroll(cell, torch.zeros(1, 3, cell.input_size))
        assert out.shape == (1, 3, cell.hidden_size) and torch.isfinite(out).all()


# --- the monitor and the taps ------------------------------------------------------------

_MONITOR_VALID = {"window": 5, "z": 6.0, "min_history": 2, "floor": 0.05, "locate_steps": False}


@FUZZ
@given(
    name=st.sampled_from(["model", *sorted(_MONITOR_VALID), "writer"]),
    value=st.one_of(anything, st.just(2**70)),
)
def test_the_monitor_answers_any_setting(name, value):
    model = nn.Linear(2, 1)
    kwargs = {"model": model, **_MONITOR_VALID, name: value}
    monitor = _answer(lambda: Monitor(**kwargs), name)
    if monitor is not None:
        model(torch.ones(3, 2)).sum().backward()
        assert monitor.step(0, 1.0)["grad_norm"] > 0


@FUZZ
@given(
    name=st.sampled_from(["step", "loss", "clip", "rerun"]),
    value=st.one_of(anything, tensors()),
)
def test_a_monitor_step_answers_any_argument(name, value):
    model = nn.Linear(2, 1)
    model(torch.ones(3, 2)).sum().backward()
    monitor = Monitor(model)
    kwargs = {"step": 0, "loss": 1.0, "clip": None, "rerun": None, name: value}
    row = _answer(lambda: monitor.step(**kwargs), name)
    if row is not None:
        assert row["grad_norm"] > 0 and isinstance(row["loss"], float)


@FUZZ
@given(taps=st.one_of(anything, st.lists(st.sampled_from([1, None, "tap"]), min_size=1)))
def test_unroll_answers_any_taps(taps):
    cell = bptt.cells.RNNCell(2, 3, dtype=DT)
    x = torch.randn(2, 4, 2, generator=torch.Generator().manual_seed(5), dtype=DT)
    result = _answer(lambda: bptt.unroll(cell, x, taps=taps), "taps", "taps[0]")
    if result is not None:
        assert torch.isfinite(result[0]).all()


_SPARSE_VALID = {"tensor": None, "fan_in": 3, "std": 1.0, "generator": None}


@FUZZ
@given(name=st.sampled_from(sorted(_SPARSE_VALID)), value=st.one_of(anything, tensors()))
def test_sparse_fan_in_answers_any_argument(name, value):
    from bptt.init import sparse_fan_in_

    kwargs = {**_SPARSE_VALID, "tensor": torch.zeros(4, 5, dtype=DT), name: value}
    weight = _answer(lambda: sparse_fan_in_(**kwargs), name)
    if weight is not None:  # accepted: each row has its fan-in (at most its inputs) of nonzeros
        keep = min(int(kwargs["fan_in"]), weight.shape[1])
        nonzero = (weight != 0).sum(dim=1)
        assert bool((nonzero <= keep).all()) and bool(torch.isfinite(weight).all())
