"""`MaskedMean`: an epoch mean over masked-in samples that never reads a value back from the device."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class MaskedMean(Metric):
    """mean(values[mask]) over an epoch and all ranks (NaN if nothing was masked in), updated without a host-device
    sync: torchmetrics' MeanMetric reads `isnan(x).any()` back on every update (its nan_strategy)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Tensor, mask: Tensor) -> None:
        mask = mask.bool()
        self.total += torch.where(mask, values.double(), torch.zeros_like(values, dtype=torch.float64)).sum()
        self.count += mask.sum()

    def compute(self) -> Tensor:
        return (self.total / self.count).float()
