"""Noise estimates and label-issue metrics as pure functions on numpy arrays.

The transition matrix convention is lnl's everywhere: T[i, j] = P(ỹ = j | y = i), rows = true class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseEstimate:
    """T̂ (rows = estimated true class), the joint Q̂[ỹ, y*] it comes from, and the noise rate 1 − tr Q̂;
    `corroborated_rate` the same rate counting only the off-diagonal samples the issue score corroborates
    (`corroborated_noise`; None when not computed)."""

    transition: np.ndarray
    joint: np.ndarray
    noise_rate: float
    corroborated_rate: float | None = None


def realized_transition(true: np.ndarray, given: np.ndarray, num_classes: int) -> np.ndarray:
    """T[i, j] = #(y = i, ỹ = j) / #(y = i) over samples with a known true label (y ≥ 0); NaN rows if unseen."""
    known = true >= 0
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (true[known], given[known]), 1.0)
    rows = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, counts / np.maximum(rows, 1), np.nan)


def confident_classes(
    probs: np.ndarray, given: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, whether it is counted in the confident joint and its confident class y* (Northcutt, Jiang &
    Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021, Eq. 1): threshold t_j = mean
    p̂(j | x) over samples labelled j; y* = argmax of p̂(j | x) over the classes j with p̂(j | x) ≥ t_j (none: not
    counted)."""
    thresholds = np.array(
        [probs[given == j, j].mean() if np.any(given == j) else np.inf for j in range(num_classes)]
    )
    above = probs >= thresholds[None, :] - 1e-12
    return above.any(1), np.where(above, probs, -np.inf).argmax(1)


def confident_joint(probs: np.ndarray, given: np.ndarray, num_classes: int) -> np.ndarray:
    """Confident joint C[ỹ, y*] (Confident Learning, Eq. 1): counts of (given label, confident class y*)."""
    has, star = confident_classes(probs, given, num_classes)
    joint = np.zeros((num_classes, num_classes))
    np.add.at(joint, (given[has], star[has]), 1.0)
    return joint


def estimate_noise(probs: np.ndarray, given: np.ndarray, num_classes: int,
                   confirmed: np.ndarray | None = None) -> NoiseEstimate:  # fmt: skip
    """T̂ and the noise rate from predicted probabilities p̂(y | x) and given labels (Confident Learning, Eq. 2-3).

    The confident joint is calibrated so each row sums to the number of samples labelled ỹ = i, normalized into
    Q̂[ỹ, y*]; then T̂[i, j] = Q̂[j, i] / Σ_j Q̂[j, i] and the noise rate is 1 − Σ_i Q̂[i, i]. With `confirmed`
    (bool per sample) a sample whose confident class differs from its label counts off the diagonal only where
    confirmed, else on it (`corroborated_noise`).
    """
    has, star = confident_classes(probs, given, num_classes)
    if confirmed is not None:
        star = np.where(confirmed, star, given)
    joint = np.zeros((num_classes, num_classes))
    np.add.at(joint, (given[has], star[has]), 1.0)
    labelled = np.bincount(given, minlength=num_classes)[:num_classes].astype(float)
    rows = joint.sum(1, keepdims=True)
    calibrated = np.where(rows > 0, joint / np.maximum(rows, 1) * labelled[:, None], 0.0)
    q = calibrated / max(calibrated.sum(), 1e-12)
    column = q.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        transition = np.where(column[:, None] > 0, q.T / np.maximum(column[:, None], 1e-12), np.nan)
    return NoiseEstimate(transition, q, float(1.0 - np.trace(q)))


def top_share(score: np.ndarray, rate: float) -> tuple[np.ndarray, float]:
    """The round(rate·n) highest of n scores (ties at the cut included) as a bool mask, and the cut (inf if none)."""
    k = int(round(min(max(rate, 0.0), 1.0) * len(score)))
    if k == 0:
        return np.zeros(len(score), dtype=bool), float("inf")
    cut = float(np.sort(score)[::-1][k - 1])
    return score >= cut, cut


def corroborated_noise(
    probs: np.ndarray, given: np.ndarray, score: np.ndarray, num_classes: int
) -> NoiseEstimate:
    """The confident-joint estimate (`estimate_noise`) and its `corroborated_rate`: each off-diagonal count kept only
    where the method's issue score corroborates it, Confident Learning's "C+NR" rule (JAIR 2021, Sec. 3.2: a label
    issue is both off the diagonal of the confident joint and among the n·ρ̂ pruned by noise rate) applied to the
    count, then calibrated as in Eq. 2. The number of labels a report flags is this rate × n.

    Why: the confident joint counts every sample the model confidently puts in another class, so a weak model's own
    errors on right labels read as label noise (a clean 300-image folder: ρ̂ = 0.035). Wrong labels are found by
    both views, the model's confident class and the method's issue score (trajectory, loss bank), while a model's
    errors on right labels mostly are not: on Digits fits 82-95 % of the confident off-diagonal samples were among
    the N̂ highest scores with 30 % noise, 0 of 6 on clean labels."""
    plain = estimate_noise(probs, given, num_classes)
    confirmed, _ = top_share(score, plain.noise_rate)
    rate = estimate_noise(probs, given, num_classes, confirmed).noise_rate
    return NoiseEstimate(plain.transition, plain.joint, plain.noise_rate, rate)


def transition_mae(estimate: np.ndarray, realized: np.ndarray) -> float:
    """Mean absolute error per entry over the rows of the realized T that have samples (and a finite estimate)."""
    rows = ~np.isnan(realized).any(1) & ~np.isnan(estimate).any(1)
    return float(np.abs(estimate[rows] - realized[rows]).mean()) if rows.any() else float("nan")


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the boolean `positive` (Mann–Whitney U, ties counted half)."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for s, c in zip(start, counts):
        ranks[order[s : s + c]] = s + (c + 1) / 2.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def precision_at_k(scores: np.ndarray, positive: np.ndarray, k: int) -> float:
    """Share of true positives among the k highest scores (stable order on ties)."""
    if k <= 0:
        return float("nan")
    top = np.argsort(-scores, kind="mergesort")[:k]
    return float(positive[top].mean())
