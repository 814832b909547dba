"""Flags follow the noise estimate, a relabel changes the label, and corrections are written only on evidence."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from lnl.report.decisions import MIN_NOISE_RATE, RELABEL, SUSPECT, chance_check, decide, reliability_check
from lnl.report.estimates import auroc, corroborated_noise, estimate_noise
from lnl.report.label_report import LabelReport, summarize, write_label_report


def _labels(n: int = 1000, classes: int = 10, rate: float = 0.3, seed: int = 0, accuracy: float = 0.95):
    """True labels, given labels with `rate` of them moved to another class, and the probabilities of a student of
    the given accuracy against the truth (its wrong labels score high: score = 1 − p(ỹ | x))."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    wrong = rng.random(n) < rate
    given = np.where(wrong, (true + rng.integers(1, classes, n)) % classes, true)
    predicted = np.where(rng.random(n) < accuracy, true, rng.integers(0, classes, n))
    probs = np.full((n, classes), 0.05 / (classes - 1))
    probs[np.arange(n), predicted] = 0.95
    return true, given, probs


def _decide(true, given, probs, held_out=None):
    score = 1.0 - probs[np.arange(len(given)), given]
    noise = estimate_noise(probs, given, probs.shape[1])
    everyone = np.ones(len(given), dtype=bool)
    return decide(score, given, probs.argmax(1), everyone, everyone, noise.noise_rate, held_out), noise


def test_flags_follow_the_noise_estimate_and_relabels_change_the_label() -> None:
    true, given, probs = _labels()
    decision, noise = _decide(true, given, probs)
    flagged = decision.flag != "no"
    assert flagged.sum() == round(noise.noise_rate * len(given))
    assert abs(noise.noise_rate - np.mean(true != given)) < 0.05
    relabel = decision.flag == RELABEL
    assert decision.applied and (decision.corrected[relabel] != given[relabel]).all()
    assert (decision.corrected[~relabel] == given[~relabel]).all()
    assert (decision.flag[flagged & ~relabel] == SUSPECT).all()
    assert np.mean(decision.corrected == true) > np.mean(given == true) + 0.2


def test_clean_labels_get_few_flags_and_keep_their_labels() -> None:
    true, _, probs = _labels(rate=0.0, accuracy=0.99)  # a network on the labels it was trained on
    decision, noise = _decide(true, true.copy(), probs)
    assert noise.noise_rate < MIN_NOISE_RATE
    assert np.mean(decision.flag != "no") <= 0.02
    assert not decision.applied and (decision.corrected == true).all()
    assert decision.reason.startswith("labels kept as given: the estimated noise rate")
    assert set(decision.flag) <= {"no", SUSPECT}


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_a_models_own_errors_are_not_read_as_noise(rate: float) -> None:
    """A student right on 93 % of the images (its errors confident, on right labels too) and a second view (the
    method's issue score) that finds the wrong labels but not the student's errors: Confident Learning's rate counts
    the student's errors as noise (about 0.07 more), the corroborated rate does not; flags follow it."""
    true, given, probs = _labels(n=2000, rate=rate, accuracy=0.93, seed=3)
    wrong = given != true
    score = np.where(wrong, 0.9, 0.0) + 0.1 * np.random.default_rng(4).random(len(given))
    noise = corroborated_noise(probs, given, score, 10)
    assert noise.noise_rate == estimate_noise(probs, given, 10).noise_rate > wrong.mean() + 0.04
    assert abs(noise.corroborated_rate - wrong.mean()) < 0.02
    everyone = np.ones(len(given), dtype=bool)
    decision = decide(score, given, probs.argmax(1), everyone, everyone, noise.corroborated_rate, None)
    assert abs(np.mean(decision.flag != "no") - wrong.mean()) <= 0.02  # clean: at most 2 % flagged


def test_a_model_at_chance_corrects_nothing() -> None:
    rng = np.random.default_rng(1)
    given = rng.integers(0, 10, 100)
    reason = chance_check(rng.integers(0, 10, 100), given)
    assert reason is not None and "not clearly above chance" in reason
    assert chance_check(np.where(rng.random(100) < 0.5, given, 0), given) is None  # 50 % agreement: clear
    true, given, probs = _labels()
    decision, _ = _decide(true, given, probs, held_out=reason)
    assert not decision.applied and (decision.corrected == given).all() and (decision.flag != RELABEL).all()
    assert decision.reason == f"labels kept as given: {reason}"


def test_unseparated_flags_correct_nothing() -> None:
    """Scores that carry no information: the flagged labels disagree with the model no more than the others."""
    true, given, probs = _labels()
    score = 0.9 + 0.01 * np.random.default_rng(2).random(len(given))
    everyone = np.ones(len(given), dtype=bool)
    decision = decide(score, given, probs.argmax(1), everyone, everyone, 0.3, None)
    assert (decision.flag != "no").sum() == 300
    assert not decision.applied and "not separated" in decision.reason


def test_sorting_the_csv_by_issue_score_reproduces_the_auroc(tmp_path: Path) -> None:
    """Scores 1e-7 apart (ties at 5 decimals): the file keeps their order, so its AUROC is the summary's."""
    true, given, probs = _labels(n=400)
    rng = np.random.default_rng(3)
    wrong, u = given != true, rng.random(400)
    score = np.where(wrong, 1 - 1e-7 * u, 1e-7 * u)
    top_right = ~wrong & (np.arange(400) < 80)  # right labels among the top scores, just below the wrong ones
    score[top_right] = 1 - 1e-7 * (1 + u[top_right])
    split = np.array(["noisy"] * 400, dtype=object)
    noise = estimate_noise(probs, given, 10)
    decision = decide(
        score, given, probs.argmax(1), split == "noisy", split == "noisy", noise.noise_rate, None
    )
    report = LabelReport(index=np.arange(400), split=split, given=given, true=true, probs=probs, issue_score=score,
                         candidate=probs.argmax(1), noise=noise, flag=decision.flag, corrected=decision.corrected,
                         decision=decision.reason)  # fmt: skip
    path = write_label_report(report, str(tmp_path / "label_report.csv"))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    from_file = np.array([float(r["issue_score"]) for r in rows])
    wrong = np.array([r["given_label"] != r["true_label"] for r in rows])
    summary = summarize(report, 10)
    assert auroc(from_file, wrong) == pytest.approx(summary.auroc, abs=1e-12) and summary.auroc == 1.0
    assert auroc(np.round(from_file, 5), wrong) < 0.95  # what 5 decimals did: ties at 1.00000
    assert {r["flagged"] for r in rows} <= {"no", SUSPECT, RELABEL}


@pytest.mark.parametrize(("accuracy", "n", "passes"), [(0.95, 100, True), (0.9, 400, True), (0.6, 100, False),
                                                       (0.75, 60, False)])  # fmt: skip
def test_reliability_check_needs_a_model_more_often_right_than_the_labels(accuracy, n, passes) -> None:
    """Noisy hold-out labels (30 % wrong): a student of true accuracy a is trusted with corrections only when the
    lower bound of a, recovered from its agreement with the noisy labels, exceeds the labels' 0.70; a 0.75 student
    on 60 held-out images is too uncertain, a 0.6 student (the 150-200-image folders) is worse than the labels."""
    true, given, probs = _labels(n=n, rate=0.3, seed=3, accuracy=accuracy)
    reason = reliability_check(probs.argmax(1), given, 0.3, 10, noisy_labels=True)
    assert (reason is None) == passes, reason
    if not passes:
        assert reason.startswith("the model is right on an estimated") and "(0.70)" in reason


def test_reliability_check_reads_clean_hold_out_labels_as_they_are() -> None:
    """With clean hold-out labels the agreement is the accuracy itself: 0.8 on 200 images beats labels 40 % wrong
    (0.60), not labels 10 % wrong (0.90)."""
    true, _, probs = _labels(n=200, rate=0.0, seed=1, accuracy=0.78)
    predicted = probs.argmax(1)
    assert reliability_check(predicted, true, 0.4, 10, noisy_labels=False) is None
    assert reliability_check(predicted, true, 0.1, 10, noisy_labels=False) is not None


def test_reliability_check_refuses_a_hold_out_too_small_to_check_anything() -> None:
    """Fewer than 5 held-out images per class (the 150-image folder of the README's measurements: 20 of 10 classes,
    where corrections had taken the labels from 0.70 to 0.51 right) keep the labels, whatever the agreement."""
    _, given, probs = _labels(n=100, rate=0.3, seed=3, accuracy=0.95)
    predicted = probs.argmax(1)
    assert reliability_check(predicted[:49], given[:49], 0.3, 10, noisy_labels=True).startswith("49 held-out")
    assert reliability_check(predicted[:50], given[:50], 0.3, 10, noisy_labels=True) is None
