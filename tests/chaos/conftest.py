"""``make chaos``'s seed: ``pytest tests/chaos --seed N`` or ``CHAOS_SEED=N``; a random one otherwise."""

from __future__ import annotations

import os
import random

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--seed", type=int, default=None, help="the chaos run's seed (default: $CHAOS_SEED or random)")


@pytest.fixture
def chaos_seed(request: pytest.FixtureRequest) -> int:
    chosen = request.config.getoption("--seed", default=None)
    if chosen is None:
        chosen = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))
    print(f"\nchaos seed {chosen} (replay: make chaos SEEDS={chosen})", flush=True)
    return int(chosen)
