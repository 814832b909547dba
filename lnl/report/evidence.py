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
    [B] in [0, 1] is higher when the given label is more likely wrong; `corrected` [B] the label the method would
    train on instead; `columns` the method's own per-sample evidence (name → [B]), written as report columns.
    """

    probs: Tensor
    issue_score: Tensor
    corrected: Tensor
    columns: dict[str, Tensor] = field(default_factory=dict)


def flagged_correction(issue_score: Tensor, candidate: Tensor, given: Tensor) -> Tensor:
    """The candidate label where the issue score exceeds 1/2 (the label is flagged), else the given label."""
    return torch.where(issue_score > 0.5, candidate, given)


def loss_based_evidence(logits: Tensor, given: Tensor) -> LabelEvidence:
    """CE's plain score: issue score 1 − p(ỹ | x) = 1 − exp(−ℓ_CE), the small-loss criterion mapped to [0, 1]
    (Han et al. 2018, "Co-teaching"); corrected label = argmax p for flagged samples; column `student_loss`."""
    probs = F.softmax(logits.float(), dim=-1)
    p_given = probs.gather(1, given[:, None]).squeeze(1)
    score = 1.0 - p_given
    loss = -torch.log(p_given.clamp_min(1e-12))
    return LabelEvidence(
        probs, score, flagged_correction(score, probs.argmax(1), given), {"student_loss": loss}
    )


def corrected_target_evidence(
    logits: Tensor, q: Tensor, given: Tensor, columns: dict[str, Tensor]
) -> LabelEvidence:
    """EMLC, MLC: issue score 1 − q(ỹ) of the corrected target q the student trains on (EMLC Fig. 3; MLC Eq. 2);
    corrected label argmax q where flagged; `columns` next to the student's plain loss."""
    ev = loss_based_evidence(logits, given)
    score = 1.0 - q.gather(1, given[:, None]).squeeze(1).float()
    return LabelEvidence(ev.probs, score, flagged_correction(score, q.argmax(1), given), ev.columns | columns)


def selection_evidence(
    logits: Tensor, given: Tensor, wrong_posterior: Tensor, columns: dict[str, Tensor]
) -> LabelEvidence:
    """DML: issue score = the selection's own view, P(high-loss mode | loss-bank score) in the sample's group (NaN
    where the bank never saw the sample: the student's plain score there); corrected label = the student's."""
    ev = loss_based_evidence(logits, given)
    score = torch.where(wrong_posterior.isnan(), ev.issue_score, wrong_posterior)
    return LabelEvidence(
        ev.probs, score, flagged_correction(score, ev.probs.argmax(1), given), ev.columns | columns
    )
