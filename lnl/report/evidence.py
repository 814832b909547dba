"""What a method says about each (image, given label) pair: the record behind `label_report.csv`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class LabelEvidence:
    """A method's evidence on a batch.

    `probs` [B, C] is p̂(y | x), the posterior that predicts the label and feeds the noise estimate; `issue_score`
    [B] in [0, 1] is higher when the given label is more likely wrong; `candidate` [B] the label the method
    believes (its candidate: whether it replaces the given one is the report's decision, `lnl.report.decisions`);
    `columns` the method's own per-sample evidence (name → [B]), written as report columns.
    """

    probs: Tensor
    issue_score: Tensor
    candidate: Tensor
    columns: dict[str, Tensor] = field(default_factory=dict)


def loss_based_evidence(logits: Tensor, given: Tensor) -> LabelEvidence:
    """CE's plain score: issue score 1 − p(ỹ | x) = 1 − exp(−ℓ_CE), the small-loss criterion mapped to [0, 1]
    (Han et al. 2018, "Co-teaching"); candidate label argmax p; column `student_loss`."""
    z = logits.double()  # float64 and the log-odds L = log Σ_{j≠ỹ} exp(z_j − z_ỹ): no ties near p = 0 or 1
    others = (z - z.gather(1, given[:, None])).scatter(1, given[:, None], float("-inf"))
    log_odds = torch.logsumexp(others, dim=1)
    probs = F.softmax(z, dim=-1)
    score = torch.sigmoid(log_odds)  # 1 − p(ỹ | x)
    loss = F.softplus(log_odds, threshold=30.0)  # −log p(ỹ | x)
    return LabelEvidence(probs, score, probs.argmax(1), {"student_loss": loss})


def corrected_target_evidence(
    logits: Tensor, q: Tensor, given: Tensor, columns: dict[str, Tensor]
) -> LabelEvidence:
    """EMLC, MLC: issue score 1 − q(ỹ) of the corrected target q the student trains on (EMLC Fig. 3; MLC Eq. 2);
    candidate label argmax q; `columns` next to the student's plain loss."""
    ev = loss_based_evidence(logits, given)
    score = 1.0 - q.gather(1, given[:, None]).squeeze(1).float()
    return LabelEvidence(ev.probs, score, q.argmax(1), ev.columns | columns)


def selection_evidence(
    logits: Tensor, given: Tensor, bank_score: Tensor, columns: dict[str, Tensor]
) -> LabelEvidence:
    """DML: issue score 1 − √(p_S(ỹ | x) · exp(−b)), b the loss bank's EMA of the teacher's loss on ỹ (the score
    DML's small-loss selection ranks by, Eq. 8): one minus the geometric mean of the student's confidence now and
    the teacher's confidence over training, i.e. the two networks' losses added, −(ℓ_S + b)/2 in log space. The
    student never fits ỹ directly (it learns from the teacher), the bank remembers training; where the bank never
    saw the sample (b NaN) the student's plain score stands. Candidate label = the student's."""
    ev = loss_based_evidence(logits, given)
    bank_score = bank_score.to(ev.issue_score)
    pooled = -torch.expm1(-(ev.columns["student_loss"] + bank_score) / 2)
    score = torch.where(bank_score.isnan(), ev.issue_score, pooled)
    return LabelEvidence(ev.probs, score, ev.probs.argmax(1), ev.columns | columns)


def trajectory_evidence(logits: Tensor, given: Tensor, mean_confidence: Tensor) -> LabelEvidence:
    """CE: issue score 1 − √(p(ỹ | x) · μ), μ = the mean of p_t(ỹ | x) over training (`TrainingConfidence`, Dataset
    Cartography Eq. 1): one minus the geometric mean of the student's confidence now and over training (a wrong
    label is fitted late, if at all; the final model alone has forgotten that); the student's plain score where
    never trained on. Candidate label = the student's; columns `student_loss`, `mean_confidence`."""
    ev = loss_based_evidence(logits, given)
    mean_confidence = mean_confidence.to(ev.issue_score)
    pooled = -torch.expm1((mean_confidence.log() - ev.columns["student_loss"]) / 2)
    score = torch.where(mean_confidence.isnan(), ev.issue_score, pooled)
    columns = ev.columns | {"mean_confidence": mean_confidence}
    return LabelEvidence(ev.probs, score, ev.probs.argmax(1), columns)
