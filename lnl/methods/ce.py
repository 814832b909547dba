"""CE (empirical risk minimisation) on the noisy labels: the baseline and the unit of every speed ratio."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lnl.losses import accuracy, smoothed_cross_entropy
from lnl.methods.base import LNLModule, has_true_labels
from lnl.methods.dynamics import TrainingConfidence
from lnl.report.evidence import LabelEvidence, trajectory_evidence


class CE(LNLModule):
    """Cross-entropy on the noisy stream, optional label smoothing; automatic optimization.

    Args:
        label_smoothing: ε of label-smoothed CE (0 gives plain CE).
        **kwargs: everything `LNLModule` takes (num_classes, backbone, optimizer, scheduler, ...).
    """

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        self.label_smoothing = label_smoothing
        self.confidence = TrainingConfidence()  # p_t(ỹ | x) over training: the label report's evidence

    def setup(self, stage: str) -> None:
        super().setup(stage)
        size = getattr(getattr(self._trainer, "datamodule", None), "train_size", 0) if self._trainer else 0
        self.confidence.preallocate(
            int(size or 0)
        )  # without a data module (bench) the record grows on demand

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        if not self.finite_batch(batch):
            return None  # on_nonfinite: skip, before any forward pass updates BN statistics
        noisy = batch["noisy"]
        logits = self.student(noisy["x"])
        loss = smoothed_cross_entropy(logits, noisy["y"], self.label_smoothing)
        if not self.check_finite("CE loss", loss):
            return None  # on_nonfinite: skip (automatic optimization steps nothing for a None loss)
        if "index" in noisy:
            self.confidence.update(noisy["index"], logits, noisy["y"])
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc_noisy", accuracy(logits.detach(), noisy["y"]))
        if has_true_labels(noisy):
            self.log("train/acc_true", accuracy(logits.detach(), noisy["y_true"]))
        return loss

    def label_evidence(self, x: Tensor, y: Tensor, index: Tensor) -> LabelEvidence:
        """The student's confidence in ỹ over training and now (`trajectory_evidence`)."""
        return trajectory_evidence(
            self.student(x), y, self.confidence.mean(index.to(self.confidence.visits.device))
        )
