"""CE (empirical risk minimisation) on the noisy labels: the baseline and the unit of every speed ratio."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lnl.losses import accuracy, smoothed_cross_entropy
from lnl.methods.base import LNLModule, has_true_labels


class CE(LNLModule):
    """Cross-entropy on the noisy stream, optional label smoothing; automatic optimization.

    Args:
        label_smoothing: ε of label-smoothed CE (0 gives plain CE).
        **kwargs: everything `LNLModule` takes (num_classes, backbone, optimizer, scheduler, ...).
    """

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        self.label_smoothing = label_smoothing

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        if not self.finite_batch(batch):
            return None  # on_nonfinite: skip, before any forward pass updates BN statistics
        noisy = batch["noisy"]
        logits = self.student(noisy["x"])
        loss = smoothed_cross_entropy(logits, noisy["y"], self.label_smoothing)
        if not self.check_finite("CE loss", loss):
            return None  # on_nonfinite: skip (automatic optimization steps nothing for a None loss)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc_noisy", accuracy(logits.detach(), noisy["y"]))
        if has_true_labels(noisy):
            self.log("train/acc_true", accuracy(logits.detach(), noisy["y_true"]))
        return loss
