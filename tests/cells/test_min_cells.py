"""The minimal GRU and LSTM (Feng et al. 2024): equal to the peer's (lucidrains'
minGRU-pytorch 0.2.1) with copied weights, the log-space scan equal to the sequential
step (outputs, final state, every gradient), the taps under the same contract in both,
bad arguments refused, and a real training run that learns."""

from __future__ import annotations

import pytest
import torch
from minGRU_pytorch.minGRU import minGRU as PeerMinGRU
from minGRU_pytorch.minLSTM import minLSTM as PeerMinLSTM

import bptt
from bptt._kernels._scan import log_linear_scan
from bptt.cells import MinGRUCell, MinLSTMCell
from bptt.taps import ClipNorm, RecordNorms
from helpers import rounding_tol

F64 = torch.float64
CELLS = [MinGRUCell, MinLSTMCell]


def _g(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def _paper_minlstm(cell: MinLSTMCell, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """The paper's sequential minLSTM (section 3.2, appendix B.3), written out here:
    f' = f / (f + i), i' = i / (f + i), h_t = f' h_{t-1} + i' g(W_h x_t + b_h)."""
    w, b = cell.weight_ih, cell.bias_ih
    h, out = h0, []
    for x_t in x.unbind(1):
        kf, ki, kh = (x_t @ w.T + b).chunk(3, -1)
        f, i = torch.sigmoid(kf), torch.sigmoid(ki)
        h = f / (f + i) * h + i / (f + i) * _g(kh)
        out.append(h)
    return torch.stack(out, 1)


def _peer_pair(kind: type, features: int, hidden: int):
    """Our cell (no bias, as the peer's projection) and the peer's module with the same
    weights: the peer stacks (h, z) and (h, f, i), we stack (z, h) and (f, i, h)."""
    torch.manual_seed(0)
    ours = kind(features, hidden, bias=False, dtype=F64)
    peer_cls = PeerMinGRU if kind is MinGRUCell else PeerMinLSTM
    peer = peer_cls(features, expansion_factor=hidden / features, proj_out=False).double()
    blocks = ours.weight_ih.detach().chunk(len(ours.gates), 0)
    with torch.no_grad():
        layer = peer.to_hidden_and_gate if kind is MinGRUCell else peer.to_hidden_and_f_i_gate
        layer.weight.copy_(torch.cat([blocks[-1], *blocks[:-1]], 0))
    return ours, peer


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("steps", [2, 100])
def test_outputs_equal_the_peers_with_copied_weights(kind, steps):
    """The peer's parallel (log-space, whole-sequence Heinsen) mode and its sequential
    mode, float64, against our scan and our step. The peer starts its minGRU from its
    ``prev_hidden`` p and its parallel minLSTM from g(p) (its sequential minLSTM from p):
    our state is h itself, so each gets the argument that means our h0."""
    ours, peer = _peer_pair(kind, 3, 6)
    gen = torch.Generator().manual_seed(steps)
    x = 2 * torch.randn(4, steps, 3, dtype=F64, generator=gen)
    raw = torch.randn(4, 1, 6, dtype=F64, generator=gen)
    h0 = _g(raw)  # positive: the peer's minGRU takes log(h0)
    with torch.no_grad():
        parallel = peer(x, raw if kind is MinLSTMCell else h0)
        h, sequential = h0, []
        for t in range(steps):
            h = peer(x[:, t : t + 1], h)
            sequential.append(h)
        sequential_out = torch.cat(sequential, 1)
        scan, final = bptt.unroll(ours, x, h0[:, 0], engine="fast")
        loop, _ = bptt.unroll(ours, x, h0[:, 0], engine="generic")
        la, _ = ours.log_coefficients(x)
    # the peer's whole-sequence form loses eps * |sum log a| of relative precision
    spread = la.sum(1).abs().max().item() + 1.0
    tol = rounding_tol(8 * steps, spread * scan.abs().max().item(), F64)
    for ref in (parallel, sequential_out):
        for found in (scan, loop):
            assert torch.allclose(found, ref, rtol=0, atol=tol), (found - ref).abs().max()
    assert torch.equal(final, scan[:, -1])


def test_minlstm_is_the_papers_equations():
    """With biases, against the paper's equations written out in float64."""
    torch.manual_seed(1)
    cell = MinLSTMCell(3, 5, dtype=F64)
    x = torch.randn(2, 50, 3, dtype=F64)
    h0 = torch.randn(2, 5, dtype=F64)
    with torch.no_grad():
        expected = _paper_minlstm(cell, x, h0)
        found, _ = bptt.unroll(cell, x, h0)
    tol = rounding_tol(8 * 50, expected.abs().max().item(), F64)
    assert torch.allclose(found, expected, rtol=0, atol=tol)


def _run(cell, x, h0, taps, engine):
    cell.zero_grad()
    start = h0.clone().requires_grad_(True)
    inputs = x.clone().requires_grad_(True)
    record = RecordNorms()
    out, final = bptt.unroll(cell, inputs, start, taps=[record, *taps], engine=engine)
    (out.pow(2).sum() + final.sin().sum()).backward()
    grads = [p.grad.clone() for p in cell.parameters()]
    return [out.detach(), final.detach(), start.grad, inputs.grad, record.norms, *grads]


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("taps", [(), (ClipNorm(0.05),)], ids=["record", "record+clip"])
@pytest.mark.parametrize("steps", [1, 2, 37, 1000])
def test_the_scan_equals_the_sequential_step(kind, taps, steps):
    """Outputs, final state, dL/dh0, dL/dx, every weight's gradient and the taps'
    recorded norms, float64, from a start of either sign."""
    torch.manual_seed(0)
    cell = kind(3, 5, dtype=F64)
    gen = torch.Generator().manual_seed(steps)
    x = 2 * torch.randn(4, steps, 3, dtype=F64, generator=gen)
    h0 = torch.randn(4, 5, dtype=F64, generator=gen)
    scan = _run(cell, x, h0, taps, "fast")
    loop = _run(cell, x, h0, taps, "generic")
    for a, b in zip(scan, loop, strict=True):
        # a sum over at most T steps of terms no larger than the largest result
        tol = rounding_tol(16 * steps, b.abs().max().item(), F64)
        assert torch.allclose(a, b, rtol=0, atol=tol), (a - b).abs().max()


@pytest.mark.parametrize("kind", CELLS)
def test_taps_see_the_same_deltas_in_the_scan_as_in_the_generic_engine(kind):
    """Every delta_t as a tap sees it (after a clipping tap before it), and what flows
    on: the engines differ only by rounding."""

    class Keep:
        def __init__(self):
            self.seen: dict[int, torch.Tensor] = {}

        def __call__(self, t, delta):
            self.seen[t] = delta.clone()
            return delta

    torch.manual_seed(0)
    cell = kind(2, 4, dtype=F64)
    x = torch.randn(3, 40, 2, dtype=F64)
    kept = {}
    for engine in ("fast", "generic"):
        keep = Keep()
        out, _ = bptt.unroll(cell, x, taps=[ClipNorm(0.02), keep], engine=engine)
        out.sum().backward()
        kept[engine] = keep.seen
    assert sorted(kept["fast"]) == sorted(kept["generic"]) == list(range(40))
    for t in range(40):
        a, b = kept["fast"][t], kept["generic"][t]
        assert torch.allclose(a, b, rtol=0, atol=rounding_tol(16 * 40, 1.0, F64))
        assert a.norm(dim=1).max() <= 0.02 * (1 + 1e-12)


@pytest.mark.parametrize("kind", CELLS)
def test_auto_runs_the_scan_and_the_state_starts_at_g_of_zero(kind):
    cell = kind(2, 3)
    assert bptt.engine.has_fast_engine(cell)
    x = torch.randn(2, 9, 2)
    auto, _ = bptt.unroll(cell, x)
    fast, _ = bptt.unroll(cell, x, engine="fast")
    assert torch.equal(auto, fast)
    assert torch.equal(cell.initial_state(2), torch.full((2, 3), 0.5))
    assert isinstance(bptt.cells.make_cell(kind.__name__[:-4].lower(), 2, 3), kind)


def test_float32_scan_keeps_its_precision_on_long_strongly_forgetting_sequences():
    """Chunked, the log-space scan in float32 stays within 2e-5 (relative) of float64
    at T = 4000 with sum log a about -10^4, where the whole-sequence form loses about
    eps32 * 10^4 = 1e-3."""
    torch.manual_seed(0)
    cell = MinGRUCell(4, 16, dtype=F64)
    x = torch.randn(2, 4000, 4, dtype=F64) + 3.0
    with torch.no_grad():
        log_a, log_b = cell.log_coefficients(x)
        h0 = torch.full((2, 16), 0.5, dtype=F64)
        exact = log_linear_scan(log_a, log_b, h0)
        single = log_linear_scan(log_a.float(), log_b.float(), h0.float()).double()
    assert log_a.sum(1).min() < -5000
    assert ((single - exact).abs() / exact.abs()).max() < 2e-5


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize(
    ("args", "kwargs", "error", "needle"),
    [
        ((0, 4), {}, ValueError, "input_size"),
        ((2, 0), {}, ValueError, "hidden_size"),
        ((2, 2.5), {}, TypeError, "hidden_size"),
        ((True, 4), {}, TypeError, "input_size"),
        ((2, 4), {"bias": "yes"}, TypeError, "bias"),
    ],
)
def test_bad_settings_are_refused(kind, args, kwargs, error, needle):
    with pytest.raises(error, match=needle):
        kind(*args, **kwargs)


@pytest.mark.parametrize("kind", CELLS)
def test_bad_inputs_and_states_are_refused_with_both_values(kind):
    cell = kind(3, 4, dtype=F64)
    with pytest.raises(ValueError, match=r"input_size=3: expected \(B, T, 3\), got \(2, 5, 2\)"):
        bptt.unroll(cell, torch.randn(2, 5, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"dtype torch\.float32 but the cell.s parameters"):
        bptt.unroll(cell, torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"state has shape \(2, 5\).*expects \(2, 4\)"):
        bptt.unroll(cell, torch.randn(2, 5, 3, dtype=F64), torch.zeros(2, 5, dtype=F64))
    with pytest.raises(ValueError, match="at least one sample and one step"):
        bptt.unroll(cell, torch.randn(2, 0, 3, dtype=F64))
    with pytest.raises(ValueError, match="non-finite"):
        x = torch.randn(2, 5, 3, dtype=F64)
        x[1, 2, 0] = float("nan")
        bptt.unroll(cell, x, check_finite=True)


def test_the_mingru_recipe_and_its_refusal_of_a_recurrent_rate():
    from bptt.run import ConfigError, TrainConfig, build_model
    from bptt.run.training._build import parameter_groups
    from bptt.tasks import make_task

    config = TrainConfig.from_dict({"task": "adding", "length": 5, "method": "mingru"})
    assert (config.cell, config.optimizer.lr, config.clip.max_norm) == ("mingru", 1e-2, 1.0)
    bad = TrainConfig.from_dict(
        {"task": "adding", "length": 5, "method": "mingru", "hidden": 4, "lr_recurrent": 1e-4}
    )
    with pytest.raises(ConfigError, match="lr_recurrent"):
        parameter_groups(bad, build_model(bad, make_task("adding", 5)))


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_a_min_cell_learns_the_adding_task(cell):
    """T = 50, seeded, trained by the scan through the library: well below the
    baseline (predicting the mean), where it starts."""
    config = {"task": "adding", "length": 50, "cell": cell, "hidden": 16, "steps": 400}
    config.update({"lr": 1e-2, "clip_norm": 1.0, "threads": 1, "seed": 0, "monitor": False})
    summary = bptt.train(config).summary
    assert summary["final_loss"] < 0.2 * summary["baseline_loss"]
