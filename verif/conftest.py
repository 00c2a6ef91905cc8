"""Shared pytest fixtures: a logged, replayable random seed per test.

Warnings are errors. A test module that builds components only to check that their parameters
are rejected must start with ``# amaranth: UnusedElaboratable=no``: otherwise Amaranth warns
when the half-built object is garbage-collected, which can happen during any later test of the
same worker and fail it.
"""

import gc

import numpy as np
import pytest

from verif.harness import pick_seed


@pytest.fixture
def seed(request):
    """A seed from ``SEED`` or fresh; printed so a failure can be replayed with ``SEED=...``."""
    s = pick_seed()
    print(f"{request.node.nodeid}: seed={s} (replay: SEED={s})")
    return s


@pytest.fixture
def rng(seed):
    """A NumPy generator seeded with :func:`seed`."""
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True)
def _collect_garbage():
    """Collect after each test, so an UnusedElaboratable warning fails the test that caused it."""
    yield
    gc.collect()
