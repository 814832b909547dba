"""CE (empirical risk minimisation) on the noisy labels: the baseline and the unit of every speed ratio."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lnl.data.batch import Batch
from lnl.errors import ConfigError
from lnl.losses import accuracy, smoothed_cross_entropy
from lnl.methods.base import LNLModule, data_train_size, has_true_labels
from lnl.methods.crossfit import CrossFitEnsemble, mean_softmax_logits
from lnl.methods.dynamics import TrainingConfidence
from lnl.report.evidence import LabelEvidence, trajectory_evidence


class CE(LNLModule):
    """Cross-entropy on the noisy stream, optional label smoothing; automatic optimization.

    Args:
        label_smoothing: ε of label-smoothed CE (0 gives plain CE).
        cross_fit_folds: K ≥ 2 trains K networks in one run, network k never on the labels of fold k
            (`lnl.methods.crossfit`): the label report judges each sample with the network that never saw its label
            (Confident Learning's out-of-fold self-confidence), predictions are the K networks' mean softmax.
            0 (default): one network, the label report judges the labels it was trained on.
        **kwargs: everything `LNLModule` takes (num_classes, backbone, optimizer, scheduler, ...).
    """

    def __init__(
        self, num_classes: int, label_smoothing: float = 0.0, cross_fit_folds: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(num_classes, **kwargs)
        if cross_fit_folds < 0 or cross_fit_folds == 1:
            raise ConfigError(
                f"model.cross_fit_folds = {cross_fit_folds}: use 0 (off) or a number of folds >= 2"
            )
        self.label_smoothing = label_smoothing
        self.confidence = TrainingConfidence()  # p_t(ỹ | x) over training: the label report's evidence
        if cross_fit_folds:
            more = [self.build_backbone(self.hparams.backbone, self.hparams.backbone_kwargs)
                    for _ in range(cross_fit_folds - 1)]  # fmt: skip
            self.student = CrossFitEnsemble([self.student, *more], seed=torch.initial_seed())

    @property
    def ensemble(self) -> CrossFitEnsemble | None:
        return self.student if isinstance(self.student, CrossFitEnsemble) else None

    def init_targets(self) -> dict[str, nn.Module]:
        if self.ensemble is None:
            return super().init_targets()
        return {f"student {k}": net for k, net in enumerate(self.ensemble.nets)}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.confidence.preallocate(data_train_size(self))  # without a data module (bench): grows on demand

    def train_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        noisy = batch.noisy
        if self.ensemble is not None:
            members = self.ensemble.members(noisy.x)
            loss = self.ensemble.loss(members, noisy.y, noisy.index, self.label_smoothing)
            logits, judged = (
                mean_softmax_logits(members.detach()),
                self.ensemble.out_of_fold(members.detach(), noisy.index),
            )
        else:
            logits = judged = self.student(noisy.x)
            loss = smoothed_cross_entropy(logits, noisy.y, self.label_smoothing)
        if not self.check_finite("CE loss", loss):
            return None  # on_nonfinite: skip (automatic optimization steps nothing for a None loss)
        if noisy.index is not None:
            self.confidence.update(noisy.index, judged, noisy.y)  # cross-fit: out-of-fold p_t(ỹ | x)
        folds = self.ensemble.folds if self.ensemble is not None else 1
        self.log("train/loss", loss / folds, prog_bar=True)
        self.log("train/acc_noisy", accuracy(logits.detach(), noisy.y))
        if has_true_labels(noisy):
            self.log("train/acc_true", accuracy(logits.detach(), noisy.y_true))
        return loss

    def label_evidence(self, x: Tensor, y: Tensor, index: Tensor) -> LabelEvidence:
        """The student's confidence in ỹ over training and now (`trajectory_evidence`); cross-fit: of the network
        that never trained on the sample's label (the K networks' mean for a sample no network trained on)."""
        mean_confidence = self.confidence.mean(index.to(self.confidence.visits.device))
        if self.ensemble is None:
            return trajectory_evidence(self.student(x), y, mean_confidence)
        members = self.ensemble.members(x)
        unseen = mean_confidence.isnan().to(x.device)[:, None]
        logits = torch.where(unseen, mean_softmax_logits(members), self.ensemble.out_of_fold(members, index))
        return trajectory_evidence(logits, y, mean_confidence)
