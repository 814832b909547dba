"""Pure loss functions shared by the methods (no module state, no RNG)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from lnl.numerics import wide


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction = {reduction!r}: expected 'mean', 'sum' or 'none'")


def soft_cross_entropy(logits: Tensor, target_probs: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy against soft targets: -sum_c q_c log softmax(z)_c (MLC/EMLC student loss)."""
    return _reduce(-(target_probs * F.log_softmax(logits, dim=-1)).sum(dim=-1), reduction)


def smoothed_cross_entropy(
    logits: Tensor, labels: Tensor, smoothing: float = 0.0, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy with label smoothing (Szegedy et al. 2016): target (1-s)·onehot + s/C."""
    return F.cross_entropy(logits, labels, reduction=reduction, label_smoothing=smoothing)


def kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, reverse: bool = False
) -> Tensor:
    """Distillation term ξ²·KL(p_T ‖ p_S), p = softmax(z/ξ), batch mean (Hinton et al. 2015).

    `reverse=True` gives ξ²·KL(p_S ‖ p_T), the direction written in the DML paper's Eq. 2 (L_KD = KL(p^ξ, q^ξ)
    with p the student's); gradients flow into the student logits either way.
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    p, log_p, log_q = (log_p_student.exp(), log_p_student, log_p_teacher) if reverse else (
        log_p_teacher.exp(), log_p_teacher, log_p_student)  # fmt: skip
    kl = (p * (log_p - log_q)).sum(dim=-1)
    return temperature**2 * kl.mean()


def masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """`values[mask].sum()` without boolean indexing (which reads the mask's count back from the device)."""
    return torch.where(mask, values, torch.zeros_like(values)).sum()


def uda_consistency(
    logits_weak: Tensor,
    logits_strong: Tensor,
    temperature: float,
    threshold: float,
    keep: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """UDA consistency (Xie et al. 2020): mean_i 1[max p_i ≥ thr]·CE(sg p_i, strong_i), p = softmax(weak/τ).

    Returns the loss (mean over all given samples, 0 for an empty batch) and the confidence mask. With a bool
    `keep`, the mean runs over the kept rows only (0 when none) and the mask is 0 outside them: the same numbers
    as indexing both batches by `keep`, without the host-device sync of boolean indexing.
    """
    target = F.softmax(logits_weak.detach() / temperature, dim=-1)
    mask = (target.max(dim=-1).values >= threshold).to(logits_strong.dtype)
    if keep is not None:
        mask = mask * keep.to(mask.dtype)
        per_sample = soft_cross_entropy(logits_strong, target, reduction="none")
        kept = torch.where(keep, per_sample * mask, torch.zeros_like(per_sample))  # no NaN from dropped rows
        return kept.sum() / keep.sum().clamp_min(1), mask
    if logits_strong.shape[0] == 0:
        return logits_strong.sum() * 0.0, mask
    per_sample = soft_cross_entropy(logits_strong, target, reduction="none")
    return (per_sample * mask).mean(), mask


def pseudo_labels(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Hard pseudo labels from a teacher's logits: sampled from its softmax (DML Eq. 4, ŷ ~ P(·|x; θ_T)) with
    `generator`, or the argmax without one. No gradient. Non-finite logits (a step whose finiteness check is
    deferred, reported later) sample from zeros instead: torch.multinomial would stop the device on NaN."""
    with torch.no_grad():
        if generator is None:
            return logits.argmax(-1)
        probs = logits.detach().float().nan_to_num(0.0, 0.0, 0.0).softmax(-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def corrupt_odd_positions(
    y: Tensor, logits: Tensor, kind: str, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """EMLC's gate supervision (EMLC Eq. 11): the odd positions of a clean batch get a corrupted label, uniform over
    the C classes (`random`, may hit the right one) or the teacher's strongest wrong class (`adversarial`).
    Returns (ỹ, mask of corrupted positions)."""
    corrupt = torch.arange(y.shape[0], device=y.device) % 2 == 1
    return torch.where(corrupt, CORRUPTIONS[kind](y, logits, generator), y), corrupt


def _uniform_label(y: Tensor, logits: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randint(0, logits.shape[-1], y.shape, generator=generator, device=y.device)


def _strongest_wrong_label(y: Tensor, logits: Tensor, generator: torch.Generator | None) -> Tensor:
    return wide(logits.detach()).scatter(1, y[:, None], float("-inf")).argmax(1)


CORRUPTIONS: dict[str, Callable[[Tensor, Tensor, torch.Generator | None], Tensor]] = {
    "random": _uniform_label,
    "adversarial": _strongest_wrong_label,
}


def per_sample_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample CE (float32 even under bf16 autocast), e.g. for small-loss scores."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Top-1 accuracy of a batch, ignoring labels < 0 (unknown; NaN when none is known). No host sync."""
    known = labels >= 0
    hits = (logits.argmax(dim=-1) == labels) & known
    return hits.sum().float() / known.sum().float()


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's NT-Xent loss (Chen et al. 2020, Eq. 1): the other view of each sample against the 2B-2 negatives.

    z1[i] and z2[i] are the projections of two views of sample i; the loss is the mean over all 2B anchors of
    -log( exp(sim(a, p)/t) / sum_{k != a} exp(sim(a, k)/t) ) with cosine similarity.
    """
    z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, positive)
