"""Methods: one LightningModule per method on the shared `LNLModule` base."""

from lnl.methods.base import LNLModule
from lnl.methods.ce import CE
from lnl.methods.dml import DML
from lnl.methods.emlc import EMLC
from lnl.methods.l2rw import L2RW
from lnl.methods.mlc import MLC
from lnl.methods.mwnet import MWNet
from lnl.methods.simclr import SimCLR

__all__ = ["CE", "DML", "EMLC", "L2RW", "LNLModule", "MLC", "MWNet", "SimCLR"]
