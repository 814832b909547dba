"""How DML's selection obtains the ratios R(c) of Eq. 8: one registered object per rule (`selection.rule`).

Every rule reads Eq. 8 as "rank by loss within a group, keep the R(c) quantile" (`selection.py`); they differ in
how R(c) is obtained:

- `estimated` (default): R(c) estimates group c's clean share, without the noise rate. During `warmup_epochs`
  R = ε0 (1.0: every sample, networks fit clean patterns first). After it, at every refresh, π̂_c = the weight of
  the low-loss component of a two-component Gaussian mixture fitted to the group's bank scores (`estimator: gmm`;
  `split`: the Otsu cut; `feedback_share`: the share of the group's samples whose feedback evidence E_i > 0, with
  E_i the EMA (`evidence_momentum`) of s_i = ℓ_i(θ) − ℓ_i(θ − η·g_pl) over the batch mean |s|: the per-sample terms
  of Eq. 7, `lnl.hypergrad.feedback.lookahead_feedback`; `confident`: the share of the group's bank scores below
  ln 2, samples whose score net gives their noisy label p > 1/2 — an agreement count below the clean share while
  the net is weak; on the EMA bank the first visit's loss (≈ ln C) keeps weight m^k after k visits, so with m = 0.9
  it lags ~10 epochs: it keeps 𝒮 small early, which is why it helps at 80 % noise, not an estimate). π̂_c falls at once but rises by at most `max_rise` per
  refresh (a teacher that learnt a wrong label of 𝒮 makes it look clean). R(c) = π̂_c + (1 − π̂_c)·ramp,
  ramp = max(0, 1 − (epoch − warm-up + 1)/`schedule_epochs`): Co-teaching's schedule from 1 with its known τ
  replaced by the per-class estimate 1 − π̂_c.
- `sign_drift` (alias `per_class`): the paper's literal update. Per-group feedback h(c) (mean s_i over 𝒮 ∩ c) →
  EMA (β = `h_momentum`, zero-initialised, classes present in 𝒮 only) → R(c) ← clip(R(c) + δ·sign(EMA h(c)),
  r_min, r_max). Measured defect: h(c) > 0 whenever the student improves, so R(c) drifts to r_max whatever the
  selected labels are.
- `global`: one R shared by all groups, driven by the global h (works with exact feedback), bank thresholds.
- `per_batch`: no bank; the ceil(R(c)·n_c) smallest current scores of each group in the batch, R(c) by sign drift.
- `cumulative_h`: the closest literal reading of Eq. 8: after the warm-up, sample i (of group c, counted in
  R_t(c)) is in 𝒮 when its current Eq. 2 score is below ε0 + Σ_{t'≤t} h_{t'}, one threshold for all groups
  (ε0 = `h_eps0`, small: the paper's Fig. 3(f) uses 0.04-0.15; h the signed student feedback of every step
  since the first, Algorithm 1 line 9). Logged R(c): the share of group c's bank scores under the threshold.
- `schedule`: Co-teaching's oracle R(t) = 1 − τ·min(epoch / schedule_epochs, 1) from the *true* noise rate τ
  (Han et al. 2018), bank thresholds, no feedback: the reference a learned rule is compared with.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from lnl.errors import ConfigError
from lnl.hypergrad.feedback import per_class_feedback
from lnl.methods.mixture import two_gaussian_weight, two_segment_split
from lnl.validation import one_of


class SmallLossSelector(Protocol):
    """The state of `lnl.methods.selection.SmallLossSelector` a rule reads and moves (a protocol, so that the rules
    never import the selector that builds them)."""

    options: Any  # SelectionConfig
    num_classes: int
    ratio: Tensor
    target: Tensor
    thresholds: Tensor
    bank: Tensor
    bank_labels: Tensor
    evidence: Tensor
    evidence_seen: Tensor
    h_ema: Tensor
    h_ema_global: Tensor
    h_sum: Tensor
    last_refresh_epoch: Tensor

    def h_threshold(self) -> float: ...
    def update_bank(self, index: Tensor, labels: Tensor, scores: Tensor) -> None: ...
    def refresh_thresholds(self, epoch: int) -> None: ...
    def needs_refresh(self, epoch: int) -> bool: ...
    def count(self, index: Tensor, mask: Tensor) -> None: ...


Reduce = Callable[[Tensor], Tensor]


class SelectionRule:
    """A rule for R(c): bank thresholds at R(c) = ε0 during warm-up and the selector's learnt `ratio` after it."""

    name: ClassVar[str]
    drifts: ClassVar[bool] = False  # whether R moves by the sign of the feedback

    def check(self, sel: SmallLossSelector) -> None:
        """Refuse options this rule cannot run with (a one-line ConfigError)."""

    def ratio(self, sel: SmallLossSelector, epoch: int) -> Tensor:
        """R(c) in effect at `epoch`."""
        return (
            torch.full_like(sel.ratio, sel.options.eps0) if epoch < sel.options.warmup_epochs else sel.ratio
        )

    def refresh(self, sel: SmallLossSelector, epoch: int) -> bool:
        """Before the quantile thresholds are refreshed; True when the rule has set the thresholds itself."""
        return False

    def select(
        self, sel: SmallLossSelector, index: Tensor, groups: Tensor, scores: Tensor, epoch: int
    ) -> Tensor:
        """Update the bank, refresh τ when due, and return the mask bank[i] ≤ τ_group(i) (counted after warm-up)."""
        sel.update_bank(index, groups, scores)
        if sel.needs_refresh(epoch):
            sel.refresh_thresholds(epoch)
        mask = self.bank_mask(sel, index, groups, scores, epoch)
        if epoch >= sel.options.warmup_epochs:
            sel.count(index, mask)
        return mask

    def bank_mask(
        self, sel: SmallLossSelector, index: Tensor, groups: Tensor, scores: Tensor, epoch: int
    ) -> Tensor:
        return sel.bank[index] <= sel.thresholds[groups]

    def on_feedback(self, sel: SmallLossSelector, before: Tensor, after: Tensor, groups: Tensor, mask: Tensor,
                    h: Tensor, epoch: int, reduce: Reduce) -> None:  # fmt: skip
        """After a student step (the evidence bank is already updated)."""

    def update_ratios(
        self, sel: SmallLossSelector, h_c: Tensor, n_c: Tensor, h: Tensor | float, epoch: int
    ) -> None:
        """Move R by the feedback (sign-drift rules only)."""


def _gmm(sel: SmallLossSelector, members: Tensor, n: int) -> float:
    return two_gaussian_weight(torch.sort(sel.bank[members].double()).values)


def _split(sel: SmallLossSelector, members: Tensor, n: int) -> float:
    return two_segment_split(torch.sort(sel.bank[members].double()).values) / n


def _feedback_share(sel: SmallLossSelector, members: Tensor, n: int) -> float:
    return float((sel.evidence[members] > 0).double().mean())


def _confident(sel: SmallLossSelector, members: Tensor, n: int) -> float:
    return float((sel.bank[members] < math.log(2.0)).double().mean())  # EMA CE < ln 2: p(ỹ | x) > 1/2


ESTIMATORS: dict[str, Callable[[SmallLossSelector, Tensor, int], float]] = {
    "gmm": _gmm,
    "split": _split,
    "feedback_share": _feedback_share,
    "confident": _confident,
}


class Estimated(SelectionRule):
    """π̂_c from each group's bank (`estimator`), R(c) = π̂_c + (1 − π̂_c)·ramp (module docstring)."""

    name = "estimated"

    def ratio(self, sel: SmallLossSelector, epoch: int) -> Tensor:
        if epoch < sel.options.warmup_epochs:
            return torch.full_like(sel.ratio, sel.options.eps0)
        ramp = max(0.0, 1.0 - (epoch - sel.options.warmup_epochs + 1) / max(sel.options.schedule_epochs, 1))
        return sel.ratio + (1.0 - sel.ratio) * ramp

    def refresh(self, sel: SmallLossSelector, epoch: int) -> bool:
        if epoch >= sel.options.warmup_epochs:
            self.estimate(sel)
        return False

    @torch.no_grad()
    def estimate(self, sel: SmallLossSelector) -> None:
        """π̂_c per group from its seen samples (`estimator`), rising by ≤ `max_rise` per call."""
        has = (sel.bank_labels >= 0) & sel.evidence_seen
        for c in range(sel.num_classes):
            members = has & (sel.bank_labels == c)
            n = int(members.sum())
            if n < 4:  # too few samples to estimate: keep the group's R
                continue
            est = min(
                max(ESTIMATORS[sel.options.estimator](sel, members, n), sel.options.r_min), sel.options.r_max
            )
            if sel.options.max_rise is not None:  # falls at once, rises at most max_rise per estimate
                est = min(est, float(sel.target[c]) + sel.options.max_rise)
            sel.target[c] = est
        sel.ratio.copy_(sel.target)


class SignDrift(SelectionRule):
    """R(c) += δ·sign(EMA of the per-group feedback h(c)) after warm-up (the paper's literal update)."""

    name = "sign_drift"
    drifts = True

    def on_feedback(self, sel, before, after, groups, mask, h, epoch, reduce):  # noqa: ANN001
        h_c, n_c = per_class_feedback(before, after, groups, sel.num_classes, mask, reduce=reduce)
        self.update_ratios(sel, h_c, n_c, h, epoch)

    @torch.no_grad()
    def update_ratios(self, sel, h_c, n_c, h, epoch):  # noqa: ANN001
        present, step = self.drift(sel, h_c, n_c, h)
        if epoch >= sel.options.warmup_epochs:
            new = (sel.ratio + step).clamp(sel.options.r_min, sel.options.r_max)
            sel.ratio.copy_(torch.where(present, new, sel.ratio))

    def drift(
        self, sel: SmallLossSelector, h_c: Tensor, n_c: Tensor, h: Tensor | float
    ) -> tuple[Tensor, Tensor]:
        """(groups present in 𝒮, δ·sign(EMA h(c))) after updating the per-group EMA of h(c)."""
        b = sel.options.h_momentum
        present = n_c.to(sel.h_ema.device) > 0
        h_c = h_c.to(sel.h_ema)
        sel.h_ema.copy_(torch.where(present, b * sel.h_ema + (1 - b) * h_c, sel.h_ema))
        return present, sel.options.delta * torch.sign(sel.h_ema)


class GlobalDrift(SignDrift):
    """One R for all groups, R += δ·sign(EMA of the global h)."""

    name = "global"

    def drift(self, sel, h_c, n_c, h):  # noqa: ANN001
        b = sel.options.h_momentum
        any_selected = n_c.to(sel.h_ema_global.device).sum() > 0  # a tensor: no host-device sync
        h_t = torch.as_tensor(h, dtype=sel.h_ema_global.dtype, device=sel.h_ema_global.device)
        moved = b * sel.h_ema_global + (1 - b) * h_t
        sel.h_ema_global.copy_(torch.where(any_selected, moved, sel.h_ema_global))
        return any_selected.expand_as(sel.ratio), sel.options.delta * torch.sign(sel.h_ema_global)


class PerBatch(SignDrift):
    """No bank: the ceil(R(c)·n_c) smallest current scores of each group in the batch, R(c) by sign drift."""

    name = "per_batch"

    def select(self, sel, index, groups, scores, epoch):  # noqa: ANN001
        labels, scores, ratio = groups, scores.detach(), self.ratio(sel, epoch)
        order = torch.argsort(scores, stable=True)
        order = order[torch.argsort(labels[order], stable=True)]
        counts = torch.zeros(sel.num_classes, dtype=torch.long, device=labels.device)
        counts.index_add_(0, labels, torch.ones_like(labels))  # bincount would read max(labels) back (a sync)
        offsets = torch.cumsum(counts, 0) - counts
        sorted_labels = labels[order]
        rank = torch.arange(labels.numel(), device=labels.device) - offsets[sorted_labels]
        k = torch.ceil(ratio.to(scores.device).double() * counts.double() - 1e-9).long()
        mask = torch.zeros_like(labels, dtype=torch.bool)
        mask[order] = rank < k[sorted_labels]
        return mask


class Schedule(SelectionRule):
    """Co-teaching's oracle R(t) = 1 − τ·min(epoch / schedule_epochs, 1) from the true noise rate τ."""

    name = "schedule"

    def check(self, sel: SmallLossSelector) -> None:
        if sel.options.noise_rate is None or not 0.0 <= sel.options.noise_rate < 1.0:
            raise ConfigError(
                f"selection.noise_rate = {sel.options.noise_rate}: rule 'schedule' needs a noise rate in [0, 1)"
            )

    def ratio(self, sel: SmallLossSelector, epoch: int) -> Tensor:
        r = 1.0 - float(sel.options.noise_rate) * min(epoch / max(sel.options.schedule_epochs, 1), 1.0)
        return torch.full_like(sel.ratio, r)


class CumulativeH(SelectionRule):
    """After warm-up, i ∈ 𝒮 when its current score ≤ ε0 + Σ_t h_t (Eq. 8 read literally)."""

    name = "cumulative_h"

    def refresh(self, sel: SmallLossSelector, epoch: int) -> bool:
        if epoch < sel.options.warmup_epochs:
            return False
        sel.thresholds.fill_(sel.h_threshold())  # R(c) for the logs: Eq. 8's count over group c's size
        seen = sel.bank_labels >= 0
        counts = torch.bincount(sel.bank_labels[seen], minlength=sel.num_classes)[: sel.num_classes]
        under = torch.bincount(
            sel.bank_labels[seen & (sel.bank <= sel.thresholds[0])], minlength=sel.num_classes
        )[: sel.num_classes]
        sel.ratio.copy_(torch.where(counts > 0, under / counts.clamp_min(1), sel.ratio))
        sel.last_refresh_epoch.fill_(epoch)
        return True

    def bank_mask(self, sel, index, groups, scores, epoch):  # noqa: ANN001
        if epoch >= sel.options.warmup_epochs:
            return scores.detach().double() <= sel.h_threshold()
        return super().bank_mask(sel, index, groups, scores, epoch)

    def on_feedback(self, sel, before, after, groups, mask, h, epoch, reduce):  # noqa: ANN001
        sel.h_sum += torch.as_tensor(h, dtype=sel.h_sum.dtype, device=sel.h_sum.device)


RULES: dict[str, type[SelectionRule]] = {
    c.name: c for c in (Estimated, SignDrift, GlobalDrift, PerBatch, Schedule, CumulativeH)
}
ALIASES: dict[str, str] = {"per_class": "sign_drift"}  # the name of `sign_drift` before the evidence rule


def create_rule(name: str) -> SelectionRule:
    """The selection rule called `name` (or an alias); a one-line ConfigError otherwise."""
    one_of("selection.rule", name, [*RULES, *ALIASES])
    return RULES[ALIASES.get(name, name)]()
