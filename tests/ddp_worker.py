"""Training steps used by the distributed clipping test, in and out of DDP.

Kept in its own module so that processes started with ``spawn`` can import it.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import bptt
from bptt.clip import Percentile, ZScore

BATCH, STEPS, LENGTH = 16, 12, 6


def train(rank: int | None, world: int) -> dict:
    """STEPS of SGD with adaptive clipping; rank None trains one process on full batches."""
    torch.manual_seed(0)
    model = bptt.SequenceModel(bptt.cells.RNNCell(2, 8, dtype=torch.float64), 1)
    net = model if rank is None else DistributedDataParallel(model)
    policies = [Percentile(50), ZScore(z=1.0, warmup=3)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    thresholds, clipped = [], []
    for step in range(STEPS):
        x, y = bptt.tasks.adding_problem(LENGTH, BATCH, seed=step, dtype=torch.float64)
        if rank is not None:
            share = BATCH // world
            x, y = x[rank * share : (rank + 1) * share], y[rank * share : (rank + 1) * share]
        optimizer.zero_grad()
        prediction, _ = net(x)
        nn.functional.mse_loss(prediction, y).backward()  # DDP: gradients all-reduced here
        for policy in policies:  # after the all-reduce: same gradients, same thresholds
            policy(model.parameters())
            thresholds.append(policy.threshold)
            clipped.append(bool(policy.clipped))
        optimizer.step()
    return {
        "params": model.state_dict(),
        "thresholds": torch.tensor(thresholds),
        "clipped": torch.tensor(clipped),
    }


def worker(rank: int, world: int, out_dir: str) -> None:
    """One DDP rank over gloo on the CPU; saves its result to out_dir/rank{rank}.pt.

    The ranks meet through a file in out_dir, not a TCP port: a port found free by
    the parent can be taken by another process before rank 0 binds it. (The test
    failed once in a full run here and passed on every repeat; its message was not
    kept, and a port race is a cause that does not repeat.)
    """
    torch.set_num_threads(1)
    store = f"file://{os.path.join(out_dir, 'rendezvous')}"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    try:
        result = train(rank, world)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
