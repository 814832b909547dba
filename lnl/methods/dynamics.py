"""A network's confidence in each given label over training: the training-dynamics evidence of the label report.

A network fits the clean majority of a class before it memorizes the wrong labels (Arpit et al., "A Closer Look at
Memorization in Deep Networks", ICML 2017), so a wrong label's p_t(ỹ | x) stays low through most of training even
when the final network has memorized it. `TrainingConfidence` keeps, per training sample, the mean over its
training visits of p_t(ỹ | x) (Swayamdipta et al., "Dataset Cartography", EMNLP 2020, Eq. 1: μ_i =
(1/E) Σ_e p_θ(e)(ỹ_i | x_i)); 1 − μ_i ranks wrong labels better than the final loss under class-dependent noise.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lnl.hypergrad.distributed import all_gather_rows


class TrainingConfidence(nn.Module):
    """Per-sample sum and count of p_t(ỹ | x) over training steps (float64 buffers, checkpointed, all-gathered under
    DDP); `mean(index)` is μ_i, NaN for a sample never trained on. The buffers grow to the largest index seen."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("confidence_sum", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("visits", torch.zeros(0, dtype=torch.float64))
        self._size = 0  # the training set's size, once known (`preallocate`): no read-back per step

    def preallocate(self, n: int) -> None:
        """Size the buffers for indices 0..n-1 (the data module's `train_size`); 0: grow on demand."""
        self._size = n
        self._ensure_size(n)

    def _ensure_size(self, n: int) -> None:
        extra = n - self.visits.numel()
        if extra > 0:
            self.confidence_sum = torch.cat([self.confidence_sum, self.confidence_sum.new_zeros(extra)])
            self.visits = torch.cat([self.visits, self.visits.new_zeros(extra)])

    @torch.no_grad()
    def update(self, index: Tensor, logits: Tensor, given: Tensor) -> None:
        """Add this step's p(ỹ | x) of every sample of the batch (rows of all ranks)."""
        p = F.softmax(logits.detach().double(), dim=-1).gather(1, given[:, None]).squeeze(1)
        rows = all_gather_rows(torch.stack([index.double(), p], 1))
        idx = rows[:, 0].long()
        if idx.numel() == 0:
            return
        self._ensure_size(
            self._size or int(idx.max().item()) + 1
        )  # a read-back only when the size is unknown
        self.confidence_sum.index_add_(0, idx, rows[:, 1])
        self.visits.index_add_(0, idx, torch.ones_like(rows[:, 1]))

    def mean(self, index: Tensor) -> Tensor:
        """μ_i per index (NaN where never visited or out of range)."""
        out = torch.full(index.shape, float("nan"), dtype=torch.float64, device=index.device)
        inside = index < self.visits.numel()
        idx = index[inside]
        visits = self.visits[idx]
        out[inside] = torch.where(visits > 0, self.confidence_sum[idx] / visits.clamp_min(1), torch.nan)
        return out

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        for name in ("confidence_sum", "visits"):  # checkpoints written before this record: an empty one
            saved = state_dict.setdefault(prefix + name, torch.zeros(0, dtype=torch.float64))
            setattr(self, name, torch.zeros_like(saved))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
