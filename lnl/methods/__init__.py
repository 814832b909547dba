"""Methods: one LightningModule per method on the shared `LNLModule` base."""

from lnl.methods.base import LNLModule
from lnl.methods.ce import CE

__all__ = ["CE", "LNLModule"]

from lnl.methods.emlc import EMLC  # noqa: E402
from lnl.methods.mlc import MLC  # noqa: E402

__all__ += ["EMLC", "MLC"]
