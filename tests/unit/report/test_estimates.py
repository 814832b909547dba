"""Noise estimate and issue metrics against known answers: sklearn's AUROC, an exact T from perfect predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lnl.data.noise import NoiseSpec, apply_noise, transition_matrix
from lnl.report.estimates import (
    auroc,
    confident_joint,
    estimate_noise,
    precision_at_k,
    realized_transition,
    transition_mae,
)


def test_auroc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    positive = rng.random(500) < 0.3
    scores = np.round(rng.random(500) + 0.4 * positive, 1)  # many ties
    assert auroc(scores, positive) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
    assert np.isnan(auroc(scores, np.zeros(500, dtype=bool)))


def test_precision_at_k_counts_the_top_k() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.05])
    positive = np.array([True, False, True, True, False])
    assert precision_at_k(scores, positive, 2) == 0.5
    assert precision_at_k(scores, positive, 3) == pytest.approx(2 / 3)


def _noisy(
    kind: str, rate: float, n: int = 6000, classes: int = 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    true = np.random.default_rng(seed).integers(0, classes, n)
    given = apply_noise(NoiseSpec(kind=kind, rate=rate), true, classes, seed=seed)
    return true, given


@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
def test_realized_transition_matches_the_protocol(kind: str) -> None:
    true, given = _noisy(kind, 0.4)
    realized = realized_transition(true, given, 6)
    assert transition_mae(realized, transition_matrix(kind, 0.4, 6)) < 0.01


@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
def test_perfect_predictions_recover_the_realized_transition_and_rate(kind: str) -> None:
    true, given = _noisy(kind, 0.4)
    probs = np.full((len(true), 6), 0.02)
    probs[np.arange(len(true)), true] = 0.9
    estimate = estimate_noise(probs, given, 6)
    assert transition_mae(estimate.transition, realized_transition(true, given, 6)) < 1e-9
    assert estimate.noise_rate == pytest.approx(np.mean(true != given), abs=1e-9)
    assert confident_joint(probs, given, 6).sum() == len(true)  # every sample is confidently counted


def test_imperfect_predictions_give_a_close_estimate() -> None:
    """A 90%-accurate classifier whose errors are uniform: T̂ within 0.03 per entry of the realized T (its errors
    leak about 0.1/6 into every entry), far closer than assuming clean labels (the identity)."""
    true, given = _noisy("pairflip", 0.3, n=20000)
    rng = np.random.default_rng(1)
    predicted = np.where(rng.random(len(true)) < 0.9, true, rng.integers(0, 6, len(true)))
    probs = rng.dirichlet(np.ones(6), len(true)) * 0.2
    probs[np.arange(len(true)), predicted] += 0.8
    estimate = estimate_noise(probs, given, 6)
    realized = realized_transition(true, given, 6)
    assert transition_mae(estimate.transition, realized) < 0.03
    assert transition_mae(np.eye(6), realized) > 0.09
    # the estimate is the share of confident predictions that disagree with the given label: right labels whose
    # prediction is wrong (p = 0.1·5/6) plus wrong labels whose prediction is not that label (1 − 0.1/6)
    rate = np.mean(true != given)
    expected = (1 - rate) * 0.1 * 5 / 6 + rate * (1 - 0.1 / 6)
    assert estimate.noise_rate == pytest.approx(expected, abs=0.005)  # seeds 0-4: within 0.0014 of 0.3523
    assert abs(estimate.noise_rate - rate) > 0.04  # not the realized rate: the classifier's errors count


def test_unknown_truth_rows_are_ignored() -> None:
    true = np.array([0, 0, 1, -1, -1])
    given = np.array([0, 1, 1, 0, 1])
    realized = realized_transition(true, given, 3)
    assert np.allclose(realized[0], [0.5, 0.5, 0.0]) and np.allclose(realized[1], [0, 1, 0])
    assert np.isnan(realized[2]).all()
