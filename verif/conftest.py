"""Shared pytest fixtures: a logged, replayable random seed per test."""

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
