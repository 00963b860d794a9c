"""The input horizon of any sequence model: the norm of dL/dx_t by distance from the
loss, held to a closed form on a linear RNN and to attention's reach."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import bptt
from bptt.diagnose import gradient_by_distance, input_horizon
from helpers import DT

A = 0.8  # the linear RNN's W = A I: both gradients fall as A ** d


class LinearCell(nn.Module):
    """h_t = W h_{t-1} + U x_t, with W = A I and U = I (H = F = 4)."""

    hidden_size = 4

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(A * torch.eye(4, dtype=DT))
        self.u = nn.Parameter(torch.eye(4, dtype=DT))

    def forward(self, x_t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h @ self.w.T + x_t @ self.u.T


class Unrolled(nn.Module):
    """The cell over a sequence: (B, T, 4) -> the states (B, T, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = LinearCell()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bptt.unroll(self.cell, x)[0]


def test_a_linear_rnns_input_and_state_gradients_both_fall_as_the_closed_form():
    model = Unrolled()
    x = torch.randn(3, 40, 4, dtype=DT, generator=torch.Generator().manual_seed(0))
    distance = torch.arange(40, dtype=DT)
    closed = A**distance  # ||U^T (W^T)^d v|| with ||v|| = 1, U = I, W = A I
    by_input = input_horizon(model, x)
    by_state = gradient_by_distance(model.cell, x)
    # float64 over 40 steps of one product each: rounding far below 1e-12
    torch.testing.assert_close(by_input["norms"], closed, rtol=1e-12, atol=0)
    torch.testing.assert_close(by_state["norms"], closed, rtol=1e-12, atol=0)
    assert by_input["gamma"] == pytest.approx(A, rel=1e-12)
    assert by_state["gamma"] == pytest.approx(A, rel=1e-12)
    assert by_input["horizon"] == math.ceil(math.log(1e-3) / math.log(A))


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 32, dropout=0.1, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


def test_attention_reaches_every_step_of_the_sequence():
    encoder = _encoder().eval()
    x = torch.randn(4, 60, 8, generator=torch.Generator().manual_seed(1))
    found = input_horizon(encoder, x)
    assert found["horizon"] is None  # no distance below 1e-3 of the norm at the loss
    assert float(found["ratios"][-1]) > 1e-3 and found["norms"].shape == (60,)


def test_the_model_is_left_as_it_was_and_time_major_reads_the_same():
    encoder = _encoder().train()  # dropout live: it draws from the generator
    x = torch.randn(4, 12, 8, generator=torch.Generator().manual_seed(2))
    rng = torch.get_rng_state()
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    found = input_horizon(encoder.eval(), x)
    encoder.train()
    input_horizon(encoder, x)
    assert torch.equal(torch.get_rng_state(), rng) and encoder.training
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in encoder.parameters())

    class TimeMajor(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, B, F) in and out
            return self.inner(x.transpose(0, 1)).transpose(0, 1)

    twin = input_horizon(TimeMajor(encoder.eval()), x.transpose(0, 1), time_dim=0)
    torch.testing.assert_close(twin["norms"], found["norms"], rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    ("call", "error", "needle"),
    [
        (lambda m, x: input_horizon(m, x.long()), TypeError, "floating-point"),
        (lambda m, x: input_horizon(m, x[0]), ValueError, "B, T, F"),
        (lambda m, x: input_horizon(m, x, time_dim=2), ValueError, "time_dim"),
        (lambda m, x: input_horizon(m, x, y=x), ValueError, "without loss_fn"),
        (lambda m, x: input_horizon(m, x * math.nan), ValueError, "NaN or inf"),
        (lambda m, x: input_horizon(m, x, loss_fn=lambda out: out), ValueError, "scalar"),
        (
            lambda m, x: input_horizon(m, x, loss_fn=lambda out: m.cell.w.sum()),
            ValueError,
            "does not depend on x",
        ),
        (lambda m, x: input_horizon("model", x), TypeError, "torch.nn.Module"),
    ],
)
def test_what_the_input_horizon_cannot_take_is_named(call, error, needle):
    with pytest.raises(error, match=needle):
        call(Unrolled(), torch.randn(2, 5, 4, dtype=DT))
