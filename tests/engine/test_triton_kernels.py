"""The Triton kernels (engine="triton"), checked on the CPU in Triton's interpreter.

For each cell with kernels (the RNN, the orthogonal RNN, the LSTM, the GRU), every
result of the Triton engine (outputs, final state, the gradients of x, of the start
state (h0, and c0 for the LSTM) and of every parameter, the norms RecordNorms records,
the gradients after ClipNorm and ClipValue, K = 2 stacked runs with their own taps, a
NaN or inf upstream gradient) is held to the generic engine run in float64 on a
float64 copy of the cell, within a bound from float32 arithmetic (see :func:`bound`);
the fast engine's float32 loop is held to the same bound beside it, so the bound is one
a correct float32 implementation meets. Shapes are tiny: the interpreter runs each
kernel's Python body with NumPy, a few milliseconds per step.

Triton's interpreter is a setting of the whole process, read when Triton is imported
and again as it runs (``TRITON_INTERPRET=1``). So that it changes nothing for the rest
of the suite, the kernel tests run in a child process that has it
(:func:`test_kernels_in_the_triton_interpreter`); run directly under
``TRITON_INTERPRET=1`` they run here. Without Triton installed they skip and say so
(``make test`` installs it: the ``gpu`` extra); the tests of how bptt chooses and
refuses, and that it runs without Triton, run everywhere.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import math
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor

import bptt
from bptt._kernels import _triton as triton_kernels
from bptt.taps import ClipNorm, ClipValue, RecordNorms

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # in the child process

needs_triton = pytest.mark.skipif(
    not HAS_TRITON,
    reason="Triton is not installed (the gpu extra: pip install -e '.[gpu]'; make test "
    "installs it on Linux x86-64): the Triton kernels' interpreter tests need it",
)
# a kernel test: in the interpreter's process only
in_interpreter = pytest.mark.skipif(
    not (HAS_TRITON and INTERPRETED),
    reason="a kernel test: runs in the TRITON_INTERPRET=1 child process of "
    "test_kernels_in_the_triton_interpreter",
)

U = 2.0**-24  # float32 unit roundoff


def bound(steps: int, hidden: int, features: int, batch: int) -> float:
    """The relative error allowed a float32 result, against float64.

    A float32 dot product of n terms is within n u sum|terms| of the exact one (Higham,
    Accuracy and Stability of Numerical Algorithms, section 3.1), u = 2^-24. A step's
    pre-activation is a dot of H + F terms; the error of one step reaches the next
    through the recurrence, T of them in a row (the Jacobians here are contractions:
    tanh' <= 1, weights of scale 1/sqrt(H)); a weight gradient sums T B terms more. So
    n = T (H + F + B), and a factor 4 for the few elementwise roundings around each
    dot (the activation, its derivative, the taps' scaling)."""
    return 4 * U * steps * (hidden + features + batch)


def close(actual: Tensor, reference: Tensor, tol: float, what: str) -> None:
    """actual (float32) within tol of the float64 reference, relative to its largest
    element (errors are absolute at the scale of the largest term)."""
    scale = float(reference.abs().max()) or 1.0
    torch.testing.assert_close(
        actual.double(), reference, rtol=tol, atol=tol * scale, msg=lambda m: f"{what}: {m}"
    )


@needs_triton
@pytest.mark.skipif(INTERPRETED, reason="this is the interpreter's process")
def test_kernels_in_the_triton_interpreter():
    """This module's kernel tests, in a child process with TRITON_INTERPRET=1."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-rs", "-p", "no:cacheprovider"]
    command += ["-p", "no:xdist", "-m", "not slow"]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " failed" not in done.stdout and " passed" in done.stdout, done.stdout[-2000:]
    assert "a kernel test" not in done.stdout, done.stdout[-2000:]  # none skipped there


def _signatures():
    """Each kernel's (module, kernel, pointer arguments, its constexpr flags): what
    compiling it needs to be told."""
    fp32 = "*fp32"
    taps = {"ops_ptr": "*i32", "bounds_ptr": "*fp64", "slots_ptr": "*i32", "n_ops": "i32"}
    taps |= {"records_ptr": "*fp64"}
    blocks = {"BLOCK_B": "constexpr", "BLOCK_H": "constexpr"}
    elman_forward = {"hs_ptr": fp32, "w_ptr": fp32, "b_mod_ptr": fp32}
    elman_backward = dict.fromkeys(("g_ptr", "hs_ptr", "w_ptr", "d_ptr", "grad_h0_ptr"), fp32)
    lstm_forward = dict.fromkeys(("gates_ptr", "hs_ptr", "cs_ptr", "w_ptr"), fp32)
    lstm_backward = dict.fromkeys(
        ("g_ptr", "grad_c_ptr", "gates_ptr", "cs_ptr", "w_ptr", "d_ptr", "grad_h0_ptr"), fp32
    )
    lstm_backward["grad_c0_ptr"] = fp32
    gru_forward = dict.fromkeys(("gates_ptr", "hn_ptr", "hs_ptr", "w_ptr", "b_hn_ptr"), fp32)
    gru_backward = dict.fromkeys(
        ("g_ptr", "gates_ptr", "hn_ptr", "hs_ptr", "w_ptr", "d_in_ptr", "d_hh_ptr"), fp32
    )
    gru_backward["grad_h0_ptr"] = fp32
    for act in (0, 1, 2):
        flags = {"ACT": "constexpr", **blocks}
        yield "_elman", "_forward", elman_forward, flags, {"ACT": act}
        yield "_elman", "_backward", {**elman_backward, **taps}, flags, {"ACT": act}
    yield "_lstm", "_forward", lstm_forward, blocks, {}
    yield "_lstm", "_backward", {**lstm_backward, **taps}, blocks, {}
    yield "_gru", "_forward", gru_forward, blocks, {}
    yield "_gru", "_backward", {**gru_backward, **taps}, blocks, {}


@needs_triton
@pytest.mark.skipif(INTERPRETED, reason="compiling needs Triton outside its interpreter")
@pytest.mark.parametrize(
    ("module", "name", "pointers", "flags", "constants"),
    [
        pytest.param(*case, id=f"{case[0][1:]}{case[1]}{case[4].get('ACT', '')}")
        for case in _signatures()
    ],
)
def test_kernels_compile_for_a_gpu(module, name, pointers, flags, constants):
    """Every kernel through Triton's whole compiler for an H100 (sm_90), without a GPU:
    what the interpreter does not check (the types of loop-carried values and branches,
    K = 1 passed as a constant, the dot's shapes)."""
    from triton import compile as compile_kernel
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(f"bptt._kernels._triton.{module}"), name)
    sizes = {"steps": "i32", "runs": "i32", "batch": "i32", "hidden": "i32"}
    for runs in ("i32", "constexpr"):  # K = 1 arrives as a constant
        signature = {**pointers, **sizes, "runs": runs, **flags}
        given = {**constants, "BLOCK_B": 16, "BLOCK_H": 32}
        if runs == "constexpr":
            given["runs"] = 1
        source = ASTSource(fn=kernel, signature=signature, constexprs=given)
        compiled = compile_kernel(
            source, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": True}
        )
        assert compiled.asm["cubin"]


@pytest.fixture(autouse=True)
def _kernels_interpreted() -> None:
    """In the interpreter's process, the kernels were defined for the interpreter."""
    if INTERPRETED and HAS_TRITON:
        for module in triton_kernels.KERNELS.values():
            assert importlib.import_module(module).INTERPRETED


def _parts(state) -> tuple:
    """A state, or its gradient, as a tuple of tensors."""
    return state if isinstance(state, tuple) else (state,)


def _like(parts: tuple, state):
    """parts in the structure of state: a tuple for a tuple state, else one tensor."""
    return parts if isinstance(state, tuple) else parts[0]


def _draws(cell: torch.nn.Module, batch: int, steps: int, gen: torch.Generator):
    """x (B, T, F), the start state, the gradients reaching the outputs and the final
    state; a state of two tensors (h, c) for the LSTM."""
    size = cell.hidden_size
    n = 2 if isinstance(cell, bptt.cells.LSTMCell) else 1
    x = torch.randn(batch, steps, cell.input_size, generator=gen)
    state = tuple(0.5 * torch.randn(batch, size, generator=gen) for _ in range(n))
    g_out = torch.randn(batch, steps, size, generator=gen)
    g_final = tuple(torch.randn(batch, size, generator=gen) for _ in range(n))
    if n == 1:
        return x, state[0], g_out, g_final[0]
    return x, state, g_out, g_final


def _pass(cell, x, state, g_out, g_final, taps, engine):
    """Forward and backward with the given upstream gradients: every result."""
    cell = copy.deepcopy(cell)
    x = x.clone().requires_grad_()
    start = tuple(s.clone().requires_grad_() for s in _parts(state))
    out, final = bptt.unroll(cell, x, _like(start, state), taps=taps, engine=engine)
    torch.autograd.backward((out, *_parts(final)), (g_out, *_parts(g_final)))
    results = {"outputs": out.detach(), "x": x.grad}
    for name, end, begin in zip("hc", _parts(final), start, strict=False):
        results[f"final {name}"], results[f"{name}0"] = end.detach(), begin.grad
    results.update({f"d {n}": p.grad for n, p in cell.named_parameters()})
    return results


def _wide(value):
    """A tensor, or a tuple of them, in float64."""
    return tuple(v.double() for v in value) if isinstance(value, tuple) else value.double()


def _compare(cell, x, state, g_out, g_final, make_taps: Callable[[], list], check_taps=None):
    """Triton and the fast loop, float32, against the generic engine in float64."""
    steps, batch = x.shape[1], x.shape[0]
    tol = bound(steps, cell.hidden_size, cell.input_size, batch)
    ref_taps = make_taps()
    wide = [_wide(t) for t in (x, state, g_out, g_final)]
    reference = _pass(copy.deepcopy(cell).double(), *wide, ref_taps, "generic")
    for engine in ("triton", "fast"):
        taps = make_taps()
        got = _pass(cell, x, state, g_out, g_final, taps, engine)
        assert got.keys() == reference.keys()
        for name, value in reference.items():
            close(got[name], value, tol, f"{engine}: {name}")
        for tap, ref_tap in zip(taps, ref_taps, strict=True):
            if isinstance(tap, RecordNorms):
                close(tap.norms, ref_tap.norms, tol, f"{engine}: recorded norms")
                assert tap.norms.dtype == torch.float64 and tap.norms.shape == (batch, steps)
        if check_taps is not None:
            check_taps(taps)


# The cells with Triton kernels, by name: (input size, hidden size) -> a cell.
CELLS: dict[str, Callable[[int, int], torch.nn.Module]] = {
    "rnn": bptt.cells.RNNCell,
    "lstm": bptt.cells.LSTMCell,
    "gru": bptt.cells.GRUCell,
}


@in_interpreter
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize(("batch", "hidden"), [(3, 6), (20, 40)])  # (20, 40): two batch tiles
def test_rnn_matches_the_generic_engine(nonlinearity, batch, hidden, gen):
    cell = bptt.cells.RNNCell(2, hidden, nonlinearity=nonlinearity)
    x, h0, g_out, g_final = _draws(cell, batch, 5, gen)
    _compare(cell, x, h0, g_out, g_final, lambda: [RecordNorms()])


@in_interpreter
def test_rnn_without_bias_and_from_zero_state(gen):
    cell = bptt.cells.RNNCell(3, 7, bias=False)
    x, h0, g_out, g_final = _draws(cell, 2, 4, gen)
    _compare(cell, x, torch.zeros_like(h0), g_out, g_final, list)


@in_interpreter
def test_orthogonal_modrelu_matches_the_generic_engine(gen):
    cell = bptt.cells.OrthogonalRNNCell(2, 6, nonlinearity="modrelu")
    with torch.no_grad():  # some units below zero, some above, some cut at 0
        cell.modrelu_bias.copy_(torch.linspace(-0.5, 0.3, 6))
    x, h0, g_out, g_final = _draws(cell, 3, 5, gen)
    _compare(cell, x, h0, g_out, g_final, lambda: [RecordNorms()])


@in_interpreter
@pytest.mark.parametrize(("batch", "hidden"), [(3, 6), (20, 40)])  # (20, 40): two batch tiles
def test_lstm_matches_the_generic_engine(batch, hidden, gen):
    """Outputs, the final (h, c), the gradients of x, h0, c0 and every parameter, and the
    norms of the pair (dL/dh_t, dL/dc_t) the taps see."""
    cell = bptt.cells.LSTMCell(2, hidden)
    x, state, g_out, g_final = _draws(cell, batch, 4, gen)
    _compare(cell, x, state, g_out, g_final, lambda: [RecordNorms()])


@in_interpreter
def test_lstm_without_bias_and_from_zero_state(gen):
    cell = bptt.cells.LSTMCell(3, 7, bias=False)
    x, state, g_out, g_final = _draws(cell, 2, 4, gen)
    zeros = tuple(torch.zeros_like(s) for s in state)
    _compare(cell, x, zeros, g_out, g_final, list)


@in_interpreter
@pytest.mark.parametrize(("batch", "hidden"), [(3, 6), (20, 40)])  # (20, 40): two batch tiles
def test_gru_matches_the_generic_engine(batch, hidden, gen):
    """torch's formulation, r applied to W_hn h + b_hn: b_hn must reach the gradient of
    bias_hh through r, the others fold into the input side."""
    cell = bptt.cells.GRUCell(2, hidden)
    with torch.no_grad():  # a b_hn far from 0, so that where it enters shows
        cell.bias_hh[2 * hidden :].uniform_(-1.0, 1.0, generator=gen)
    x, h0, g_out, g_final = _draws(cell, batch, 4, gen)
    _compare(cell, x, h0, g_out, g_final, lambda: [RecordNorms()])


@in_interpreter
def test_gru_without_bias_and_from_zero_state(gen):
    cell = bptt.cells.GRUCell(3, 7, bias=False)
    x, h0, g_out, g_final = _draws(cell, 2, 4, gen)
    _compare(cell, x, torch.zeros_like(h0), g_out, g_final, list)


# A ClipNorm bound below most steps' norms, above some (the LSTM's norm is that of
# (dL/dh_t, dL/dc_t) together, the final c's gradient included; the GRU's z passes part
# of delta_t straight back, and its norms grow back in time).
MAX_NORM = {"rnn": 1.5, "lstm": 2.0, "gru": 2.5}


@in_interpreter
@pytest.mark.parametrize("kind", CELLS)
def test_clip_norm_inside_the_kernel(kind, gen):
    cell = CELLS[kind](2, 6)
    x, state, g_out, g_final = _draws(cell, 4, 6, gen)
    max_norm = MAX_NORM[kind]

    def acted(taps):  # the clip changed something, and left every norm within the bound
        before, after = taps[0].norms, taps[2].norms
        assert (before > max_norm * 1.01).sum() >= 4
        assert (before <= max_norm).any()  # some samples left alone
        assert (after <= max_norm * (1 + 4 * U)).all()

    taps = lambda: [RecordNorms(), ClipNorm(max_norm), RecordNorms()]  # noqa: E731
    _compare(cell, x, state, g_out, g_final, taps, acted)


@in_interpreter
@pytest.mark.parametrize("kind", CELLS)
def test_clip_value_and_taps_in_order(kind, gen):
    cell = CELLS[kind](2, 5)
    x, state, g_out, g_final = _draws(cell, 3, 6, gen)
    value = 0.4
    seen: list[float] = []

    def largest(t, delta):  # in the reference only: ClipValue had something to clamp
        seen.append(max(float(d.abs().max()) for d in _parts(delta)))
        return delta

    _compare(cell, x, state, g_out, g_final, lambda: [ClipValue(value), RecordNorms()])
    taps = lambda: [ClipNorm(0.8), ClipValue(value), ClipNorm(2)]  # noqa: E731
    _compare(cell, x, state, g_out, g_final, taps)
    wide = copy.deepcopy(cell).double()
    out, _ = bptt.unroll(wide, x.double(), _wide(state), taps=[largest], engine="generic")
    out.mul(g_out.double()).sum().backward()
    assert max(seen) > 2 * value


@in_interpreter
@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize(("bad", "step"), [(math.nan, 2), (math.inf, 2), (math.nan, 0)])
def test_clipping_never_hides_a_non_finite_gradient(kind, bad, step, gen):
    """A non-finite upstream gradient: the loop and the kernel give the same non-finite
    pattern (ClipNorm: that sample's whole delta NaN from there on; at step 0, where no
    product spreads it, a NaN left alone by the clip would stay in one unit's bias
    gradient)."""
    cell = CELLS[kind](2, 5)
    x, state, g_out, g_final = _draws(cell, 3, 4, gen)
    g_out[1, step, 0] = bad
    got = {}
    # inf * 0 in the interpreter's NumPy warns (an error under this suite's filters),
    # where the device computes NaN silently, as torch does
    for engine in ("triton", "fast"):
        rec = RecordNorms()
        with np.errstate(invalid="ignore"):
            got[engine] = _pass(
                cell, x, state, g_out, g_final, [ClipNorm(1.0), ClipValue(0.5), rec], engine
            )
        got[engine]["norms"] = rec.norms
    tol = bound(4, 5, 2, 3)
    for name, value in got["fast"].items():
        assert torch.equal(got["triton"][name].isnan(), value.isnan()), name
        torch.testing.assert_close(got["triton"][name], value, rtol=tol, atol=tol, equal_nan=True)
    assert got["triton"]["x"][1, : step + 1].isnan().all()  # steps 0..step of sample 1
    assert not got["triton"]["x"][[0, 2]].isnan().any()  # the other samples untouched


@in_interpreter
@pytest.mark.parametrize("kind", CELLS)
def test_stacked_runs_each_with_their_own_taps(kind, gen):
    """K = 2 runs in one launch (the leading run dimension), each run's taps its own,
    against the loop's stacked kernel."""
    cells = [CELLS[kind](2, 6) for _ in range(2)]
    kernel = type(cells[0]).kernel
    x = torch.randn(2, 3, 5, 2, generator=gen)  # (K, B, T, F)
    n = 2 if kind == "lstm" else 1
    state = tuple(torch.randn(2, 3, 6, generator=gen) for _ in range(n))  # (K, B, H) each
    g_out = torch.randn(2, 3, 5, 6, generator=gen)
    g_final = tuple(torch.randn(2, 3, 6, generator=gen) for _ in range(n))
    results, records = {}, {}
    for backend in ("triton", "loop"):
        own = [copy.deepcopy(c) for c in cells]
        taps = ((RecordNorms(), ClipNorm(1.0), RecordNorms()), (ClipValue(0.3), RecordNorms()))
        for run in taps:
            for tap in run:
                if isinstance(tap, RecordNorms):
                    tap.begin(5)
        xs = x.clone().requires_grad_()
        start = tuple(s.clone().requires_grad_() for s in state)
        out, final = kernel.run_stacked(own, xs, _like(start, g_final), taps, backend=backend)
        torch.autograd.backward((out, *_parts(final)), (g_out, *g_final))
        results[backend] = [out, *_parts(final), xs.grad, *(s.grad for s in start)] + [
            p.grad for c in own for p in c.parameters()
        ]
        records[backend] = [
            tap.norms for run in taps for tap in run if isinstance(tap, RecordNorms)
        ]
    tol = bound(5, 6, 2, 3)
    for got, want in zip(results["triton"], results["loop"], strict=True):
        close(got.detach(), want.detach().double(), 2 * tol, "stacked")
    for got, want in zip(records["triton"], records["loop"], strict=True):
        close(got, want, 2 * tol, "stacked records")
    assert not torch.equal(records["triton"][0], records["triton"][1])  # run 0 clipped


@in_interpreter
@pytest.mark.parametrize("kind", CELLS)
def test_unroll_stacked_selects_the_triton_kernels(kind, gen):
    """``unroll_stacked(..., engine="triton")`` runs the K runs in the Triton kernels (here
    in the interpreter; "auto" does on CUDA), each run equal to the loop's stacked pass,
    each RecordNorms its own run's."""
    from bptt.engine import unroll_stacked

    cells = [CELLS[kind](2, 6) for _ in range(3)]
    x = torch.randn(3, 4, 5, 2, generator=gen)  # (K, B, T, F)
    weights = torch.randn(3, 4, 5, 6, generator=gen)
    results = {}
    for engine in ("triton", "fast"):
        own = [copy.deepcopy(c) for c in cells]
        records = [[RecordNorms(), ClipNorm(0.5)] for _ in own]
        xs = x.clone().requires_grad_()
        out = unroll_stacked(own, xs, taps=records, engine=engine)
        (out * weights).sum().backward()
        results[engine] = [out, xs.grad, *(p.grad for c in own for p in c.parameters())]
        results[engine] += [r[0].norms for r in records]
    tol = bound(5, 6, 2, 4)
    for got, want in zip(results["triton"], results["fast"], strict=True):
        close(got.detach(), want.detach().double(), 2 * tol, f"unroll_stacked {kind}")


@in_interpreter
def test_engine_triton_refusals(gen):
    x = torch.randn(2, 3, 2, generator=gen)
    cases = [
        (bptt.cells.MinGRUCell(2, 4), x, [], "no Triton kernel yet"),
        (bptt.cells.SkipRNNCell(2, 4), x, [], "built-in cells"),
        (bptt.cells.RNNCell(2, 4).double(), x.double(), [], "float32"),
        (bptt.cells.RNNCell(2, 4), x, [lambda t, d: d], "runs only in the loop"),
        (bptt.cells.LSTMCell(2, 4), x, [lambda t, d: d], "runs only in the loop"),
        (bptt.cells.RNNCell(2, 129), x, [], "hidden size 129 > 128"),
        (bptt.cells.LSTMCell(2, 65), x, [], r"hidden size 65 > 64: .* \(4H, H\)"),
        (bptt.cells.GRUCell(2, 65), x, [], r"hidden size 65 > 64: .* \(3H, H\)"),
    ]
    for cell, inputs, taps, why in cases:
        with pytest.raises(ValueError, match=why):
            bptt.unroll(cell, inputs, taps=taps, engine="triton")
    with (
        bptt.engine.require_generic("a test"),
        pytest.raises(ValueError, match="engine='triton' cannot run here: a test"),
    ):
        bptt.unroll(bptt.cells.RNNCell(2, 4), x, engine="triton")
    for cell in (bptt.cells.RNNCell(2, 4), bptt.cells.LSTMCell(2, 64), bptt.cells.GRUCell(2, 64)):
        assert bptt.engine.triton_refusal(cell, x, taps=[RecordNorms(), ClipValue(1)]) is None
    assert "no fast engine" in bptt.engine.triton_refusal(bptt.cells.SkipRNNCell(2, 4), x)


@needs_triton
def test_cpu_needs_the_interpreter(monkeypatch, gen):
    monkeypatch.setattr(triton_kernels, "interpreted", lambda: False)
    why = bptt.engine.triton_refusal(bptt.cells.RNNCell(2, 4), torch.randn(2, 3, 2))
    assert why is not None and "TRITON_INTERPRET=1" in why


def test_auto_keeps_the_loop_on_the_cpu(monkeypatch, gen):
    """engine="auto" runs the Triton kernels only on CUDA: on the CPU nothing changes."""

    def refuse(name):
        raise AssertionError("auto chose Triton on the CPU")

    monkeypatch.setattr(triton_kernels, "function", refuse)
    cell, x = bptt.cells.RNNCell(2, 4), torch.randn(2, 3, 2, generator=gen)
    out, _ = bptt.unroll(cell, x, taps=[RecordNorms()])
    out.sum().backward()


def test_bptt_runs_without_triton():
    """Triton absent: bptt imports, auto runs, engine="triton" says what is missing."""
    code = (  # a None entry in sys.modules: neither find_spec nor import finds triton
        "import sys; sys.modules['triton'] = None\n"
        "import torch, bptt\n"
        "cell, x = bptt.cells.RNNCell(2, 3), torch.randn(2, 4, 2)\n"
        "bptt.unroll(cell, x)[0].sum().backward()\n"
        "print(bptt.engine.triton_refusal(cell, x))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Triton is not installed" in done.stdout
