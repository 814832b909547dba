"""Meta-gradient engine shared by the bi-level methods (docs/design.md): method-agnostic plain functions.

The public API: the student's look-ahead (`Lookahead`), the hypergradient estimators picked by name
(`create_hypergrad` over `SOFT_TARGETS` or `WEIGHTS`, which consume `StudentStep` records and return a
`MetaGradient`), DML's feedback (`create_feedback`, `lookahead_feedback`) and the functional forward with its
snapshots. The primitives behind them live in the submodules (`metagrad`, `weights`, `jvp`, `distributed`).
"""

from lnl.hypergrad.estimators import SOFT_TARGETS, WEIGHTS, MetaGradient, StudentStep, create_hypergrad
from lnl.hypergrad.feedback import create_feedback, lookahead_feedback
from lnl.hypergrad.functional import frozen_buffers, functional_forward, named_params, snapshot_params
from lnl.hypergrad.lookahead import Lookahead

__all__ = [
    "Lookahead",
    "SOFT_TARGETS",
    "WEIGHTS",
    "MetaGradient",
    "StudentStep",
    "create_hypergrad",
    "create_feedback",
    "lookahead_feedback",
    "frozen_buffers",
    "functional_forward",
    "named_params",
    "snapshot_params",
]
