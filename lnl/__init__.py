"""lnl: learning with noisy labels by efficient meta-learning (DML, EMLC, MLC and baselines) on Lightning."""

__version__ = "0.1.0"
