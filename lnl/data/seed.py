"""The run's seed: the one place that reads what Lightning's `seed_everything` left in `PL_GLOBAL_SEED`."""

from __future__ import annotations

import os


def run_seed(default: int = 0) -> int:
    """The global seed of this run (`seed_everything`), or `default` when none was set."""
    return int(os.environ.get("PL_GLOBAL_SEED", default))
