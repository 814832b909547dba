"""Data: sources, noise protocols, splits, transforms and the `NoisyLabelDataModule`."""

from lnl.data.datamodule import NoisyLabelDataModule
from lnl.data.noise import NoiseSpec, apply_noise, corrupt_labels, realized_rate, transition_matrix

__all__ = [
    "NoiseSpec",
    "NoisyLabelDataModule",
    "apply_noise",
    "corrupt_labels",
    "realized_rate",
    "transition_matrix",
]
