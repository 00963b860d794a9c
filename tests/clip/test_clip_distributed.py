"""Clipping under torch.distributed: every rank computes the same norm and threshold."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp

from ddp_worker import train, worker


def test_two_gloo_ranks_agree_with_each_other_and_with_one_process(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = train(None, 1)
    torch.testing.assert_close(ranks[0]["thresholds"], ranks[1]["thresholds"], rtol=0, atol=0)
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), name
        torch.testing.assert_close(value, single["params"][name], rtol=0, atol=1e-6)
    torch.testing.assert_close(ranks[0]["thresholds"], single["thresholds"], rtol=1e-6, atol=0)
    assert torch.equal(ranks[0]["clipped"], single["clipped"])
    assert single["clipped"][0::2].any() and single["clipped"][1::2].any()  # both policies clipped
