"""Shared fixtures: a small threads budget, every test inside a temp directory, and the mutants.

Helpers live in the `tests/helpers/` package, importable as `helpers.*` through pyproject's `pythonpath`.
`LNL_MUTANT=no_optim_step|noise_score` breaks lnl on purpose for the whole run (`helpers.mutants`; used by
tests/integration/test_mutants.py to check that the learning and report tests can fail).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from helpers import mutants

mutants.apply(os.environ.get("LNL_MUTANT"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# one thread per pytest-xdist worker (`make test` runs two), two otherwise
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs inside a fresh temporary directory (runs/, labels.csv and data/ land there, not in the repo)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def one_thread():
    """Tiny tensors: OpenMP threads only add contention on a shared 2-core machine (and in forked DDP workers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_wandb_run_left() -> Iterator[None]:
    """A W&B run started by one test's fit must not be reused by the next test in the same worker process."""
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None:
        if getattr(wandb, "run", None) is not None:
            wandb.finish()
        wandb.teardown()  # the W&B service resolves relative run directories against the cwd it started in


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (stable order otherwise): `pytest -n 2` starts its longest fits on both workers at once
    instead of leaving one of them for the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
