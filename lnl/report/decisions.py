"""Which labels a report flags and which it corrects: flags follow the noise estimate, corrections need evidence.

- Flags: the N̂ = round(ρ̂_c·n) highest issue scores of the n noisy-part labels are flagged, ρ̂_c the confident-
  joint noise rate estimate (Northcutt et al., JAIR 2021, Eq. 3; its "prune by noise rate" rule, Sec. 3.2, ranked
  by the method's issue score) counting only the off-diagonal samples the issue score corroborates (its "C+NR"
  rule, `lnl.report.estimates.corroborated_noise`: a weak model's own errors on right labels are not read as
  noise): the number flagged is the corroborated number of wrong labels, and a nearly clean data set gets few. An untrusted hold-out label (`val_labels: noisy`) is flagged when its score reaches the N̂-th
  noisy-part score. A flag is `relabel` where the method's label differs from the given one, else `suspect`.
- Corrections (`corrected_labels.csv`): a `relabel` row gets the method's label only when all three checks pass,
  else every row keeps its given label, every flag is `suspect`, and the report says why in one line:
  1. the student is clearly better than chance on held-out data (its agreement with the hold-out's, possibly
     noisy, labels exceeds the majority-label share by `Z_CHANCE` binomial standard errors) and more reliable than
     the given labels: with agreement A on n held-out labels whose noise rate is ρ̂ (0 for clean hold-out labels),
     and A = a(1 − ρ̂) + (1 − a)ρ̂/(C − 1) for a student of accuracy a whose errors are independent of the label
     noise, the lower bound a⁻ from A − `Z_RELIABLE`·SE(A) must exceed the labels' own estimated accuracy 1 − ρ̂
     (a weak model at 150-200 images moved more right labels than wrong ones before this check); ρ̂ is capped at
     1 − A (no student agrees more often than the labels are right), and fewer than `MIN_HELD_OUT_PER_CLASS`
     held-out images per class are too few to check anything;
  2. the corroborated noise rate ρ̂_c is at least `MIN_NOISE_RATE` (ρ̂ elsewhere is Confident Learning's rate);
  3. flagged and unflagged are separated: the share of flagged labels the method's candidate disagrees with exceeds
     the share among unflagged labels by at least `MIN_SEPARATION` (a scale-free check: a model at chance
     disagrees with most labels on both sides of any cut).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lnl.report.estimates import top_share

Z_CHANCE = 3.0
Z_RELIABLE = 2.0
MIN_HELD_OUT_PER_CLASS = 5
MIN_NOISE_RATE = 0.05
MIN_SEPARATION = 0.5
NONE, SUSPECT, RELABEL = "no", "suspect", "relabel"


@dataclass(frozen=True)
class Decision:
    """Per-row flag (`no` / `suspect` / `relabel`) and written label; whether corrections were applied and why."""

    flag: np.ndarray
    corrected: np.ndarray
    applied: bool
    reason: str


def chance_check(predicted: np.ndarray, given: np.ndarray) -> str | None:
    """None when the predictions agree with the held-out labels clearly more often than the majority label does
    (by `Z_CHANCE` binomial standard errors); else the one-line reason."""
    n = len(given)
    if n == 0:
        return "no held-out labels to check the model against"
    p0 = np.bincount(given).max() / n
    agree = float((predicted == given).mean())
    bound = p0 + Z_CHANCE * np.sqrt(p0 * (1 - p0) / n)
    if agree <= bound:
        return (f"the model agrees with {agree:.2f} of the {n} held-out labels, not clearly above chance "
                f"({p0:.2f}; needs > {bound:.2f})")  # fmt: skip
    return None


def reliability_check(predicted: np.ndarray, given: np.ndarray, noise_rate: float, num_classes: int,
                      noisy_labels: bool) -> str | None:  # fmt: skip
    """None when the student is estimated more often right on the hold-out than the given labels are (module
    docstring, check 1: a⁻ > 1 − ρ̂); else the one-line reason. `noisy_labels`: the hold-out's labels carry
    the noise rate ρ̂ (`val_labels: noisy`), else they are clean."""
    n = len(given)
    if n < MIN_HELD_OUT_PER_CLASS * num_classes:
        return (f"{n} held-out images are too few to check the model against (at least {MIN_HELD_OUT_PER_CLASS} "
                f"per class: {MIN_HELD_OUT_PER_CLASS * num_classes})")  # fmt: skip
    agree = float((predicted == given).mean())
    rho = min(max(noise_rate, 0.0), 1.0)
    if noisy_labels:  # A ≤ 1 − ρ for any student (a ≤ 1): a larger ρ̂ is a weak model's errors read as noise
        rho = min(rho, 1.0 - agree)
    low = agree - Z_RELIABLE * np.sqrt(max(agree * (1 - agree), 1.0 / n) / n)
    other = rho / max(num_classes - 1, 1) if noisy_labels else 0.0
    scale = 1.0 - rho - other if noisy_labels else 1.0
    accuracy = (low - other) / scale if scale > 0 else 0.0
    if accuracy <= 1.0 - rho:
        return (f"the model is right on an estimated {max(accuracy, 0.0):.2f} (lower bound) of the {n} held-out "
                f"images, not more often than the given labels ({1.0 - rho:.2f})")  # fmt: skip
    return None


def decide(score: np.ndarray, given: np.ndarray, candidate: np.ndarray, noisy: np.ndarray, untrusted: np.ndarray,
           noise_rate: float, held_out: str | None) -> Decision:  # fmt: skip
    """Flags and written labels of every row (module docstring); `noise_rate` is ρ̂_c, the rate flags follow. `noisy` marks the noisy part (where N̂ is
    counted), `untrusted` every row whose label may change (noisy part, noisy hold-out), `held_out` the result of
    `chance_check`."""
    _, cut = top_share(score[noisy], noise_rate)
    flagged = untrusted & (score >= cut)
    disagree = candidate != given
    rest = noisy & ~flagged
    gap = (disagree[noisy & flagged].mean() if (noisy & flagged).any() else 0.0) - (
        disagree[rest].mean() if rest.any() else 0.0
    )
    reason = held_out
    if reason is None and noise_rate < MIN_NOISE_RATE:
        reason = f"the estimated noise rate {noise_rate:.3f} (corroborated by the issue score) is below {MIN_NOISE_RATE}"
    if reason is None and gap < MIN_SEPARATION:
        reason = (f"flagged and unflagged labels are not separated (the model disagrees with {gap:.2f} more of the "
                  f"flagged than of the other labels, needs {MIN_SEPARATION})")  # fmt: skip
    applied = reason is None
    change = flagged & disagree & applied
    flag = np.where(change, RELABEL, np.where(flagged, SUSPECT, NONE)).astype(object)
    corrected = np.where(change, candidate, given)
    return Decision(
        flag, corrected, applied, "corrections applied" if applied else f"labels kept as given: {reason}"
    )
