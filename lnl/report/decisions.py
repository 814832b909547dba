"""Which labels a report flags and which it corrects: flags follow the noise estimate, corrections need evidence.

- Flags: the N̂ = round(ρ̂·n) highest issue scores of the n noisy-part labels are flagged, ρ̂ the confident-joint
  noise rate estimate (Northcutt et al., JAIR 2021, Eq. 3; its "prune by noise rate" rule, Sec. 3.2, ranked by the
  method's issue score): the number flagged is the estimated number of wrong labels, and a nearly clean data set
  gets few flags. An untrusted hold-out label (`val_labels: noisy`) is flagged when its score reaches the N̂-th
  noisy-part score. A flag is `relabel` where the method's label differs from the given one, else `suspect`.
- Corrections (`corrected_labels.csv`): a `relabel` row gets the method's label only when all three checks pass,
  else every row keeps its given label, every flag is `suspect`, and the report says why in one line:
  1. the student is clearly better than chance on held-out data: its agreement with the hold-out's (possibly noisy)
     labels exceeds the majority-label share by `Z_CHANCE` binomial standard errors;
  2. the estimated noise rate ρ̂ is at least `MIN_NOISE_RATE`;
  3. flagged and unflagged are separated: the share of flagged labels the method's candidate disagrees with exceeds
     the share among unflagged labels by at least `MIN_SEPARATION` (a scale-free check: a model at chance
     disagrees with most labels on both sides of any cut).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Z_CHANCE = 3.0
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


def decide(score: np.ndarray, given: np.ndarray, candidate: np.ndarray, noisy: np.ndarray, untrusted: np.ndarray,
           noise_rate: float, held_out: str | None) -> Decision:  # fmt: skip
    """Flags and written labels of every row (module docstring). `noisy` marks the noisy part (where N̂ is
    counted), `untrusted` every row whose label may change (noisy part, noisy hold-out), `held_out` the result of
    `chance_check`."""
    n = int(noisy.sum())
    n_flag = int(round(min(max(noise_rate, 0.0), 1.0) * n))
    flagged = np.zeros(len(score), dtype=bool)
    if n_flag > 0:
        threshold = np.sort(score[noisy])[::-1][n_flag - 1]
        flagged = untrusted & (score >= threshold)
    disagree = candidate != given
    rest = noisy & ~flagged
    gap = (disagree[noisy & flagged].mean() if n_flag else 0.0) - (
        disagree[rest].mean() if rest.any() else 0.0
    )
    reason = held_out
    if reason is None and noise_rate < MIN_NOISE_RATE:
        reason = f"the estimated noise rate {noise_rate:.3f} is below {MIN_NOISE_RATE}"
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
