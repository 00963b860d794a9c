"""Shared fixtures: one seeded generator, float64 by default for exactness tests.

Under pytest-xdist (``make test`` runs ``-n auto``) each worker gets an equal share of
the cores this process may use, set before torch, NumPy or numba start their thread
pools and passed on in the environment to every process a test starts (``bptt
train`` in a subprocess, DDP workers, Ray): workers whose threads together exceed the
cores wait on each other at every OpenMP barrier (measured on this 2-core machine: a
step of 0.15 s took 1.6-16 s with two 2-thread trainings side by side).
"""

from __future__ import annotations

import os


def _worker_threads() -> int | None:
    """Threads for this xdist worker (None outside xdist): the allowed cores divided
    among the workers, at least one."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 1 or "PYTEST_XDIST_WORKER" not in os.environ:
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux (bptt.run.training's allowed_cores does the same)
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


_THREADS = _worker_threads()
if _THREADS is not None:
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_name] = str(_THREADS)

import pytest  # noqa: E402
import torch  # noqa: E402

if _THREADS is not None:
    torch.set_num_threads(_THREADS)


@pytest.fixture
def gen() -> torch.Generator:
    """A freshly seeded generator; every test that draws random numbers uses it."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def _seed_global_rng() -> None:
    # Cells initialise from the global RNG; seed it so every test is reproducible.
    torch.manual_seed(0)
