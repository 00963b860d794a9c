"""The orthogonal cell's base and ``rebase``: the dynamic trivialization (``dtriv``) of
expRNN's released code, held to a re-implementation of that code's algorithm (its
``Parametrization`` and ``Orthogonal`` classes: the skew matrix from the upper triangle
of A, B = base @ expm(S), the base moved every K steps), in float64."""

import pytest
import torch

import bptt
from bptt.cells import OrthogonalRNNCell
from bptt.run import ConfigError, TrainConfig

H = 6


def _loss(weight: torch.Tensor, step: int) -> torch.Tensor:
    """A fixed, non-trivial function of W that changes with the step."""
    g = torch.Generator().manual_seed(step)
    target = torch.randn(H, H, generator=g, dtype=torch.float64)
    x = torch.randn(H, 3, generator=g, dtype=torch.float64)
    return ((weight @ x - target[:, :3]) ** 2).sum() + (weight * target).sum()


class _Reference:
    """expRNN's parametrization: A's upper triangle, S = triu(A) - triu(A)^T, W = base
    @ expm(S); with K, the base becomes W and A zero before the forward of steps 0,
    K, 2K, ... (their counter k)."""

    def __init__(self, skew0: torch.Tensor, lr: float, every: int | None):
        self.a = torch.triu(skew0 - skew0.t(), diagonal=1).clone().requires_grad_()
        self.base = torch.eye(H, dtype=torch.float64)
        self.optimizer = torch.optim.RMSprop([self.a], lr=lr)
        self.every, self.k = every, 0

    def weight(self) -> torch.Tensor:
        upper = self.a.triu(diagonal=1)
        return self.base @ torch.linalg.matrix_exp(upper - upper.t())

    def step(self, step: int) -> None:
        if self.every is not None:
            if self.k == 0:
                with torch.no_grad():
                    self.base = self.weight().detach()
                    self.a.zero_()
            self.k = (self.k + 1) % self.every
        self.optimizer.zero_grad()
        _loss(self.weight(), step).backward()
        self.optimizer.step()


def _ours(lr: float, every: int | None, steps: int) -> OrthogonalRNNCell:
    torch.manual_seed(0)
    cell = OrthogonalRNNCell(2, H, "modrelu", dtype=torch.float64)
    optimizer = torch.optim.RMSprop([cell.skew], lr=lr)
    if every is not None:
        cell.rebase()  # before the first step, as their first counter
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        _loss(cell.weight_hh, step).backward()
        optimizer.step()
        if every is not None and step % every == 0:
            cell.rebase()
    return cell


@pytest.mark.parametrize("every", [None, 3])
def test_our_rate_on_a_is_exprnns_twice_as_large(every):
    torch.manual_seed(0)
    skew0 = OrthogonalRNNCell(2, H, "modrelu", dtype=torch.float64).skew.detach()
    reference = _Reference(skew0, lr=2e-2, every=every)
    for step in range(1, 8):
        reference.step(step)
    cell = _ours(lr=1e-2, every=every, steps=7)
    moved = (reference.weight() - torch.linalg.matrix_exp(skew0 - skew0.t())).abs().max()
    assert moved > 1e-2  # the steps did move W
    # float64: a few H x H exponentials and products per step, 7 steps
    torch.testing.assert_close(cell.weight_hh, reference.weight().detach(), rtol=0, atol=1e-12)


def test_a_rebase_keeps_w_restarts_a_and_keeps_the_base_orthogonal():
    cell = _ours(lr=1e-2, every=None, steps=4)
    before = cell.weight_hh.detach().clone()
    cell.rebase()
    assert torch.count_nonzero(cell.skew) == 0
    torch.testing.assert_close(cell.weight_hh, before, rtol=0, atol=1e-13)
    eye = torch.eye(H, dtype=torch.float64)
    torch.testing.assert_close(cell.base @ cell.base.t(), eye, rtol=0, atol=1e-14)


def test_a_state_dict_saved_before_the_base_existed_loads_as_expRNNs():
    cell = OrthogonalRNNCell(2, H, dtype=torch.float64)
    cell.rebase()  # a base that is not the identity, to be replaced
    state = {k: v for k, v in cell.state_dict().items() if k != "base"}
    state["skew"] = torch.randn(H, H, dtype=torch.float64)
    cell.load_state_dict(state)
    assert torch.equal(cell.base, torch.eye(H, dtype=torch.float64))
    expected = torch.linalg.matrix_exp(state["skew"] - state["skew"].t())
    torch.testing.assert_close(cell.weight_hh, expected, rtol=0, atol=0)


TINY = {"task": "copy", "length": 5, "method": "dtriv", "hidden": 6, "batch_size": 8}
TINY |= {"test_size": 16, "threads": 1, "checkpoint_every": 3, "rebase_every": 2}


def test_a_dtriv_run_moves_its_base_and_resumes_bit_for_bit(tmp_path):
    whole = bptt.train({**TINY, "steps": 7, "out": str(tmp_path / "whole")})
    cell = whole.model.cell
    assert not torch.equal(cell.base, torch.eye(6))
    assert torch.count_nonzero(cell.skew) > 0  # step 7 moved A after the rebase of step 6
    bptt.train({**TINY, "steps": 4, "out": str(tmp_path / "part")})
    resumed = bptt.run.resume(tmp_path / "part", steps=7)
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def test_rebase_every_is_for_orthogonal_cells_and_a_recipes_is_dropped_under_hf():
    with pytest.raises(ConfigError, match=r"rebase_every.*orthogonal cell"):
        TrainConfig.from_dict({"task": "adding", "cell": "lstm", "rebase_every": 100})
    assert TrainConfig.from_dict({"method": "dtriv"}).rebase_every == 100
    assert TrainConfig.from_dict({"method": "dtriv", "optimizer": "hf"}).rebase_every == 0


def test_henaffs_initialisation_rotates_by_angles_from_minus_pi_to_pi():
    """As expRNN's ``henaff_init_`` and ``create_diag_``: S's superdiagonal holds the
    angles (every other entry), each drawn from U[-pi, pi]."""
    import math

    hidden = 190
    torch.manual_seed(0)
    cell = OrthogonalRNNCell(2, hidden, "modrelu", dtype=torch.float64)
    torch.manual_seed(0)  # the cell's first draw is its angles
    angles = (torch.rand(hidden // 2, dtype=torch.float64) * 2 - 1) * math.pi
    superdiagonal = torch.zeros(hidden - 1, dtype=torch.float64)
    superdiagonal[::2] = angles
    reference = torch.diag(superdiagonal, diagonal=1)
    reference = reference - reference.t()
    assert torch.equal(cell.skew - cell.skew.t(), reference)
    phases = torch.linalg.eigvals(cell.weight_hh.detach()).angle().abs()
    assert phases.max() > 3 * math.pi / 4  # the half-angle bug kept them under pi / 2
