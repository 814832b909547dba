"""Shared fixtures: small threads budget, tests/ importable (for `fakedata`), runs inside a temp directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# one thread per pytest-xdist worker (`make test` runs two), two otherwise
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs inside a fresh temporary directory (runs/, labels.csv and data/ land there, not in the repo)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
