"""Noise estimates and label-issue metrics as pure functions on numpy arrays.

The transition matrix convention is lnl's everywhere: T[i, j] = P(ỹ = j | y = i), rows = true class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseEstimate:
    """T̂ (rows = estimated true class), the joint Q̂[ỹ, y*] it comes from, and the noise rate 1 − tr Q̂."""

    transition: np.ndarray
    joint: np.ndarray
    noise_rate: float


def realized_transition(true: np.ndarray, given: np.ndarray, num_classes: int) -> np.ndarray:
    """T[i, j] = #(y = i, ỹ = j) / #(y = i) over samples with a known true label (y ≥ 0); NaN rows if unseen."""
    known = true >= 0
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (true[known], given[known]), 1.0)
    rows = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, counts / np.maximum(rows, 1), np.nan)


def confident_joint(probs: np.ndarray, given: np.ndarray, num_classes: int) -> np.ndarray:
    """Confident joint C[ỹ, y*] (Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset
    Labels", JAIR 2021, Eq. 1): threshold t_j = mean p̂(j | x) over samples labelled j; a sample labelled i counts
    towards y* = argmax of p̂(j | x) over the classes j with p̂(j | x) ≥ t_j (none: not counted)."""
    thresholds = np.array(
        [probs[given == j, j].mean() if np.any(given == j) else np.inf for j in range(num_classes)]
    )
    above = probs >= thresholds[None, :] - 1e-12
    masked = np.where(above, probs, -np.inf)
    has = above.any(1)
    star = masked.argmax(1)
    joint = np.zeros((num_classes, num_classes))
    np.add.at(joint, (given[has], star[has]), 1.0)
    return joint


def estimate_noise(probs: np.ndarray, given: np.ndarray, num_classes: int) -> NoiseEstimate:
    """T̂ and the noise rate from predicted probabilities p̂(y | x) and given labels (Confident Learning, Eq. 2-3).

    The confident joint is calibrated so each row sums to the number of samples labelled ỹ = i, normalized into
    Q̂[ỹ, y*]; then T̂[i, j] = Q̂[j, i] / Σ_j Q̂[j, i] and the noise rate is 1 − Σ_i Q̂[i, i].
    """
    joint = confident_joint(probs, given, num_classes)
    labelled = np.bincount(given, minlength=num_classes)[:num_classes].astype(float)
    rows = joint.sum(1, keepdims=True)
    calibrated = np.where(rows > 0, joint / np.maximum(rows, 1) * labelled[:, None], 0.0)
    q = calibrated / max(calibrated.sum(), 1e-12)
    column = q.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        transition = np.where(column[:, None] > 0, q.T / np.maximum(column[:, None], 1e-12), np.nan)
    return NoiseEstimate(transition, q, float(1.0 - np.trace(q)))


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
