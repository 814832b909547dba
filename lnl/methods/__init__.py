"""Methods: one LightningModule per method on the shared `LNLModule` base."""

from lnl.methods.base import LNLModule
from lnl.methods.ce import CE

__all__ = ["CE", "LNLModule"]
