"""Mutants for checking that the learning and report tests can fail (no tests here).

`LNL_MUTANT=<name>` in the environment of a pytest run (read by tests/conftest.py) breaks lnl on purpose:

- `no_optim_step`: every `torch.optim.Optimizer.step` is a no-op (a closure, if given, still runs: the forward and
  backward happen, nothing is learnt). BatchNorm statistics still move; parameters do not.
- `noise_score`: every label report's issue score is replaced by seeded uniform noise (the issue score of a method
  that knows nothing about the labels).

tests/integration/test_mutants.py runs a chosen subset of the tests under each mutant in a subprocess and asserts they fail.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import torch

MUTANTS = ("no_optim_step", "noise_score")


def _no_optim_step() -> None:
    init = torch.optim.Optimizer.__init__

    def no_step(self: torch.optim.Optimizer, closure: Any = None) -> Any:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def patched_init(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.step = types.MethodType(no_step, self)  # shadows every subclass's step (schedulers wrap it)

    torch.optim.Optimizer.__init__ = patched_init  # type: ignore[method-assign]


def _noise_score() -> None:
    from lnl.report.label_report import LabelReport

    init = LabelReport.__init__

    def patched_init(self: LabelReport, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.issue_score = np.random.default_rng(len(self.issue_score)).random(len(self.issue_score))

    LabelReport.__init__ = patched_init  # type: ignore[method-assign]


def apply(name: str | None) -> None:
    """Install the mutant called `name` in this process (None or "": none)."""
    if not name:
        return
    if name not in MUTANTS:
        raise ValueError(f"LNL_MUTANT = {name!r}: allowed values are {', '.join(MUTANTS)}")
    {"no_optim_step": _no_optim_step, "noise_score": _noise_score}[name]()
