"""The repository's folders, the same from every test file however deep it sits (tests/unit/..., tests/integration/...)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # tests/helpers/paths.py -> the repository
CONFIGS = ROOT / "configs"
