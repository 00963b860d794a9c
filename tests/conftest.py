"""Shared fixtures: one seeded generator, float64 by default for exactness tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def gen() -> torch.Generator:
    """A freshly seeded generator; every test that draws random numbers uses it."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def _seed_global_rng() -> None:
    # Cells initialise from the global RNG; seed it so every test is reproducible.
    torch.manual_seed(0)
