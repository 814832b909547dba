"""DML's small-loss selection of trusted samples 𝒮 with a memory bank and per-class ratios R(c).

DML paper ("Efficiently meta-learning for robust deep networks without prior unbiased set"), Eq. 8
and Algorithm 1 line 5: 𝒮 holds the R(c) share of each class's smallest-loss samples, and the paper drives R(c) by
the student's feedback instead of a known noise rate. Eq. 8 as printed is garbled; every rule below reads it as
"rank by loss within a group, keep the R(c) quantile", and differs in how R(c) is obtained.

- Score of sample i: a per-sample CE w.r.t. its noisy label; the bank keeps its EMA (`bank_momentum`), updated
  whenever the sample is seen (the first observation initialises it).
- Groups: the noisy label ỹ_i (`group_by: noisy_label`) or the teacher's predicted class argmax T(x_i)
  (`group_by: teacher_pred`, the Iverson bracket [argmax F(x|θ_T) = c] of Eq. 8); the bank stores each
  sample's latest group.
- Thresholds: per group c, τ_c = quantile at R(c) (linear interpolation) of the bank scores of group c over the
  samples seen so far; refreshed every `refresh_every` steps (None: at the first step of every epoch) and at every
  step of epoch 0 while the bank fills. Selection: i ∈ 𝒮 ⇔ bank[i] ≤ τ_{group(i)} (may be empty).

Rules for R(c) (`rule`):
- `estimated` (default): R(c) estimates group c's clean share, without the noise rate. During `warmup_epochs`
  R = ε0 (1.0: every sample, networks fit clean patterns first). After it, at every refresh, π̂_c = the weight of
  the low-loss component of a two-component Gaussian mixture fitted to the group's bank scores (`estimator: gmm`;
  `split`: the Otsu cut; `feedback_share`: the share of the group's samples whose feedback evidence E_i > 0, with
  E_i the EMA (`evidence_momentum`) of s_i = ℓ_i(θ) − ℓ_i(θ − η·g_pl) over the batch mean |s|: the per-sample terms
  of Eq. 7, `lnl.hypergrad.feedback.lookahead_feedback`; `confident`: the share of the group's bank scores below
  ln 2, i.e. samples whose score net gives its noisy label p > 1/2 (single-network scores), an agreement count that
  stays below the clean share while the network is weak and approaches it as the network learns; on the EMA bank
  the first visit's loss (≈ ln C) keeps weight m^k after k visits, so with m = 0.9 the count lags by ~10 epochs). π̂_c falls at once but rises by at most `max_rise` per
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

During `warmup_epochs` R stays at ε0 (feedback rules). Everything is a registered buffer (checkpointed; the bank
resizes itself on load). Under DDP the (index, group, score) and (index, evidence) updates are all-gathered before
they are applied, so bank, thresholds and R are identical on all ranks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lnl.errors import ConfigError
from lnl.hypergrad.feedback import per_class_feedback

SelectionRule = Literal[
    "estimated", "sign_drift", "per_class", "global", "per_batch", "schedule", "cumulative_h"
]
RULES: tuple[str, ...] = SelectionRule.__args__
ALIASES: dict[str, str] = {"per_class": "sign_drift"}  # the name of `sign_drift` before the evidence rule
ESTIMATORS: tuple[str, ...] = ("gmm", "split", "feedback_share", "confident")
DRIFT_RULES: tuple[str, ...] = ("sign_drift", "global", "per_batch")


@dataclass
class SelectionConfig:
    """Options of DML's selection (`model.init_args.selection` in a config); see the module docstring."""

    rule: str = "estimated"
    eps0: float = 1.0
    delta: float = 1e-3
    r_min: float = 0.05
    r_max: float = 0.95
    bank_momentum: float = 0.9
    h_momentum: float = 0.99
    evidence_momentum: float = 0.5
    refresh_every: int | None = None
    warmup_epochs: int = 2
    noise_rate: float | None = None
    schedule_epochs: int = 10
    estimator: str = "gmm"
    max_rise: float | None = 0.02
    h_eps0: float = 0.1

    @classmethod
    def coerce(cls, value: SelectionConfig | dict | None) -> SelectionConfig:
        """A config from a YAML mapping, an instance, or None (the defaults)."""
        return cls(**value) if isinstance(value, dict) else value or cls()


def all_gather_rows(t: Tensor) -> Tensor:
    """Concatenate `t` (first dim may differ per rank) over all ranks in rank order; identity outside DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes_i = [int(s.item()) for s in sizes]
    padded = t.new_zeros((max(sizes_i), *t.shape[1:]))
    padded[: t.shape[0]] = t
    out = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes_i)])


def selection_counts(mask: Tensor, y: Tensor, y_true: Tensor) -> Tensor:
    """[selected with known truth, selected and correctly labelled, correctly labelled] (float; sum-reducible)."""
    known = y_true >= 0
    clean = known & (y == y_true)
    return torch.stack([(mask & known).sum(), (mask & clean).sum(), clean.sum()]).float()


class SmallLossSelector(nn.Module):
    """Per-group small-loss selection with an EMA loss bank and ratios R(c) (DML Eq. 8; module docstring)."""

    def __init__(
        self,
        num_classes: int,
        num_samples: int = 0,
        *,
        rule: str = "estimated",
        eps0: float = 1.0,
        delta: float = 1e-3,
        r_min: float = 0.05,
        r_max: float = 0.95,
        bank_momentum: float = 0.9,
        h_momentum: float = 0.99,
        evidence_momentum: float = 0.5,
        refresh_every: int | None = None,
        warmup_epochs: int = 2,
        noise_rate: float | None = None,
        schedule_epochs: int = 10,
        estimator: str = "gmm",
        max_rise: float | None = 0.02,
        h_eps0: float = 0.1,
    ) -> None:
        super().__init__()
        if rule not in RULES:
            raise ConfigError(f"selection.rule = {rule!r}: allowed values are {', '.join(RULES)}")
        if not 0.0 < r_min <= r_max <= 1.0:
            raise ConfigError(f"selection r_min, r_max = {r_min}, {r_max}: need 0 < r_min <= r_max <= 1")
        if not 0.0 < eps0 <= 1.0:
            raise ConfigError(f"selection.eps0 = {eps0}: must be in (0, 1]")
        if not h_eps0 > 0.0:
            raise ConfigError(f"selection.h_eps0 = {h_eps0}: must be > 0 (the paper: ε0 cannot be zero)")
        for name, m in (("bank_momentum", bank_momentum), ("h_momentum", h_momentum),
                        ("evidence_momentum", evidence_momentum)):  # fmt: skip
            if not 0.0 <= m < 1.0:
                raise ConfigError(f"selection.{name} = {m}: must be in [0, 1)")
        if refresh_every is not None and refresh_every < 1:
            raise ConfigError(
                f"selection.refresh_every = {refresh_every}: must be >= 1 or null (once per epoch)"
            )
        if estimator not in ESTIMATORS:
            raise ConfigError(
                f"selection.estimator = {estimator!r}: allowed values are {', '.join(ESTIMATORS)}"
            )
        if rule == "schedule" and (noise_rate is None or not 0.0 <= noise_rate < 1.0):
            raise ConfigError(
                f"selection.noise_rate = {noise_rate}: rule 'schedule' needs a noise rate in [0, 1)"
            )
        self.num_classes, self.rule = num_classes, ALIASES.get(rule, rule)
        self.eps0, self.delta, self.r_min, self.r_max = eps0, delta, r_min, r_max
        self.bank_momentum, self.h_momentum, self.evidence_momentum = (
            bank_momentum,
            h_momentum,
            evidence_momentum,
        )
        self.refresh_every, self.warmup_epochs = refresh_every, warmup_epochs
        self.noise_rate, self.schedule_epochs = noise_rate, schedule_epochs
        self.fixed_size = False
        self.estimator = estimator
        self.max_rise, self.h_eps0 = max_rise, h_eps0
        self.register_buffer("bank", torch.zeros(num_samples))
        self.register_buffer("bank_labels", torch.full((num_samples,), -1, dtype=torch.long))
        self.register_buffer("evidence", torch.zeros(num_samples))
        self.register_buffer("evidence_seen", torch.zeros(num_samples, dtype=torch.bool))
        self.register_buffer("ratio", torch.full((num_classes,), float(eps0)))
        self.register_buffer("target", torch.ones(num_classes))
        self.register_buffer("h_ema", torch.zeros(num_classes))
        self.register_buffer("h_ema_global", torch.zeros(()))
        self.register_buffer("h_sum", torch.zeros((), dtype=torch.float64))  # `cumulative_h`: Σ_t h_t
        self.register_buffer("thresholds", torch.full((num_classes,), float("inf")))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_refresh_epoch", torch.full((), -1, dtype=torch.long))
        self._host: list[int] | None = (
            None  # [step, last_refresh_epoch] mirrored on the host (no sync per step)
        )
        self.register_buffer("times_seen", torch.zeros(num_samples))  # after warm-up: selection frequency
        self.register_buffer("times_selected", torch.zeros(num_samples))

    @property
    def drifts(self) -> bool:
        """Whether R moves by the sign of the feedback (`sign_drift`, `global`, `per_batch`)."""
        return self.rule in DRIFT_RULES

    # ----------------------------------------------------------------------------------------------- bank
    def preallocate(self, n: int) -> None:
        """Size the bank for sample indices < n once (the data set's size); it then no longer grows on demand."""
        self._ensure_size(n)
        self.fixed_size = n > 0

    def _resize(self, n: int) -> None:
        extra = n - self.bank.numel()
        self.bank = torch.cat([self.bank, self.bank.new_zeros(extra)])
        self.bank_labels = torch.cat([self.bank_labels, self.bank_labels.new_full((extra,), -1)])
        self.evidence = torch.cat([self.evidence, self.evidence.new_zeros(extra)])
        self.evidence_seen = torch.cat([self.evidence_seen, self.evidence_seen.new_zeros(extra)])
        self.times_seen = torch.cat([self.times_seen, self.times_seen.new_zeros(extra)])
        self.times_selected = torch.cat([self.times_selected, self.times_selected.new_zeros(extra)])

    def _ensure_size(self, n: int) -> None:
        if n > self.bank.numel():
            self._resize(n)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        n = state_dict.get(prefix + "bank")
        if n is not None and n.numel() != self.bank.numel():
            self.bank = self.bank[:0]
            self.bank_labels, self.evidence = self.bank_labels[:0], self.evidence[:0]
            self.evidence_seen = self.evidence_seen[:0]
            self.times_seen, self.times_selected = self.times_seen[:0], self.times_selected[:0]
            self._resize(n.numel())
        self._host = None  # counters change: read them again
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _gathered(self, index: Tensor, *columns: Tensor) -> tuple[Tensor, ...] | None:
        """(index, *columns) all-gathered across ranks, each duplicate index taking its first occurrence's values
        (DistributedSampler padding), so the unordered duplicate writes that follow are deterministic."""
        rows = all_gather_rows(torch.stack([index.double(), *(c.detach().double() for c in columns)], 1))
        idx = rows[:, 0].long()
        if idx.numel() == 0:
            return None
        if not self.fixed_size:  # a preallocated bank needs no host sync to check its size
            self._ensure_size(int(idx.max().item()) + 1)
        order = torch.arange(idx.numel(), device=idx.device)
        first = torch.full_like(self.bank_labels, idx.numel()).scatter_reduce(0, idx, order, reduce="amin")
        src = first[idx]
        return idx, *(rows[src, k + 1] for k in range(len(columns)))

    @torch.no_grad()
    def update_bank(self, index: Tensor, labels: Tensor, scores: Tensor) -> None:
        """EMA-update the bank with this step's (index, group, score), all-gathered across ranks."""
        got = self._gathered(index, labels, scores)
        if got is None:
            return
        idx, lab, sc = got
        sc = sc.to(self.bank.dtype)
        seen = self.bank_labels[idx] >= 0
        m = self.bank_momentum
        self.bank[idx] = torch.where(seen, m * self.bank[idx] + (1 - m) * sc, sc)
        self.bank_labels[idx] = lab.long()

    @torch.no_grad()
    def update_evidence(self, index: Tensor, evidence: Tensor) -> None:
        """EMA-update the per-sample feedback evidence E_i (first observation initialises), all-gathered."""
        got = self._gathered(index, evidence)
        if got is None:
            return
        idx, ev = got
        ev = ev.to(self.evidence.dtype)
        m = self.evidence_momentum
        seen = self.evidence_seen[idx]
        self.evidence[idx] = torch.where(seen, m * self.evidence[idx] + (1 - m) * ev, ev)
        self.evidence_seen[idx] = True

    # ------------------------------------------------------------------------------------------ thresholds
    def current_ratio(self, epoch: int) -> Tensor:
        """R(c) in effect: ε0 during warm-up (feedback rules), the schedule for `schedule`, else the learnt R."""
        if self.rule == "schedule":
            r = 1.0 - float(self.noise_rate) * min(epoch / max(self.schedule_epochs, 1), 1.0)
            return torch.full_like(self.ratio, r)
        if epoch < self.warmup_epochs:
            return torch.full_like(self.ratio, self.eps0)
        if self.rule == "estimated":
            ramp = max(0.0, 1.0 - (epoch - self.warmup_epochs + 1) / max(self.schedule_epochs, 1))
            return self.ratio + (1.0 - self.ratio) * ramp
        return self.ratio

    @torch.no_grad()
    def estimate_ratios(self) -> None:
        """`estimated` rule: π̂_c per group from its seen samples (`estimator`), rising by ≤ `max_rise` per call."""
        has = (self.bank_labels >= 0) & self.evidence_seen
        for c in range(self.num_classes):
            sel = has & (self.bank_labels == c)
            n = int(sel.sum())
            if n < 4:  # too few samples to estimate: keep the group's R
                continue
            if self.estimator == "feedback_share":
                est = float((self.evidence[sel] > 0).double().mean())
            elif self.estimator == "confident":  # EMA CE < ln 2: p(ỹ | x) > 1/2 (ỹ the net's top class)
                est = float((self.bank[sel] < math.log(2.0)).double().mean())
            else:
                values = torch.sort(self.bank[sel].double()).values
                est = (
                    two_gaussian_weight(values) if self.estimator == "gmm" else two_segment_split(values) / n
                )
            est = min(max(est, self.r_min), self.r_max)
            if self.max_rise is not None:  # falls at once, rises at most max_rise per estimate
                est = min(est, float(self.target[c]) + self.max_rise)
            self.target[c] = est
        self.ratio.copy_(self.target)

    def h_threshold(self) -> float:
        """`cumulative_h`: the loss threshold ε0 + Σ_t h_t of Eq. 8."""
        return self.h_eps0 + float(self.h_sum)

    @torch.no_grad()
    def refresh_thresholds(self, epoch: int) -> None:
        """τ_c = linear-interpolated quantile at R(c) of the seen bank scores of group c (+inf: group unseen)."""
        if self.rule == "estimated" and epoch >= self.warmup_epochs:
            self.estimate_ratios()
        if self.rule == "cumulative_h" and epoch >= self.warmup_epochs:
            self.thresholds.fill_(self.h_threshold())  # R(c) for the logs: Eq. 8's count over group c's size
            seen = self.bank_labels >= 0
            counts = torch.bincount(self.bank_labels[seen], minlength=self.num_classes)[: self.num_classes]
            under = torch.bincount(
                self.bank_labels[seen & (self.bank <= self.thresholds[0])], minlength=self.num_classes
            )[: self.num_classes]
            self.ratio.copy_(torch.where(counts > 0, under / counts.clamp_min(1), self.ratio))
            self.last_refresh_epoch.fill_(epoch)
            return
        seen = self.bank_labels >= 0
        scores, labels = self.bank[seen], self.bank_labels[seen]
        order = torch.argsort(scores, stable=True)
        order = order[torch.argsort(labels[order], stable=True)]
        s = scores[order]
        counts = torch.bincount(labels, minlength=self.num_classes)[: self.num_classes]
        offsets = torch.cumsum(counts, 0) - counts
        q = self.current_ratio(epoch).to(s.dtype).clamp(0, 1) * (counts - 1).clamp_min(0).to(s.dtype)
        lo, hi = q.floor().long(), q.ceil().long()
        has = counts > 0
        safe = lambda k: (offsets + k).clamp(0, max(s.numel() - 1, 0))  # noqa: E731
        if s.numel():
            s_lo, s_hi = s[safe(lo)], s[safe(hi)]
            tau = s_lo + (q - lo.to(s.dtype)) * (s_hi - s_lo)
        else:
            tau = torch.zeros_like(q)
        self.thresholds.copy_(torch.where(has, tau, torch.full_like(tau, float("inf"))))
        self.last_refresh_epoch.fill_(epoch)
        if self._host is not None:
            self._host[1] = epoch

    def _host_counters(self) -> list[int]:
        """[step, last_refresh_epoch] on the host: read from the buffers once (after construction or a load), then
        kept in step with them, so deciding a refresh costs no host-device sync."""
        if self._host is None:
            self._host = [int(self.step), int(self.last_refresh_epoch)]
        return self._host

    def _needs_refresh(self, epoch: int) -> bool:
        if epoch == 0:
            return True
        step, last = self._host_counters()
        if self.refresh_every is None:
            return last != epoch
        return step % self.refresh_every == 0

    # ------------------------------------------------------------------------------------------- select
    @torch.no_grad()
    def select(self, index: Tensor, groups: Tensor, scores: Tensor, epoch: int) -> Tensor:
        """Update the bank with this batch, refresh τ when due, and return the bool mask of 𝒮 for the batch.

        `groups` is each sample's group (its noisy label, or the teacher's predicted class: Eq. 8's bracket).
        """
        if self.rule == "per_batch":
            mask = self._per_batch(groups, scores.detach(), self.current_ratio(epoch))
        else:
            self.update_bank(index, groups, scores)
            if self._needs_refresh(epoch):
                self.refresh_thresholds(epoch)
            mask = self.bank[index] <= self.thresholds[groups]
            if self.rule == "cumulative_h" and epoch >= self.warmup_epochs:
                mask = scores.detach().double() <= self.h_threshold()
            if epoch >= self.warmup_epochs:
                self._count(index, mask)
        self.step += 1
        if self._host is not None:
            self._host[0] += 1
        return mask

    def _count(self, index: Tensor, mask: Tensor) -> None:
        """Times each sample was seen and selected after warm-up (all-gathered): its selection frequency."""
        got = self._gathered(index, mask.double())
        if got is not None:
            idx, selected = got
            self.times_seen.index_put_((idx,), torch.ones_like(selected, dtype=self.times_seen.dtype), True)
            self.times_selected.index_put_((idx,), selected.to(self.times_selected.dtype), True)

    @torch.no_grad()
    @torch.no_grad()
    def record_feedback(self, index: Tensor, groups: Tensor, mask: Tensor, before: Tensor, after: Tensor,
                        h: Tensor, epoch: int, reduce: Callable[[Tensor], Tensor] = lambda t: t) -> None:  # fmt: skip
        """After a student step: the evidence bank gets s_i = ℓ_i(θ) − ℓ_i(θ') over the batch's mean |s| (DML Eq. 7);
        the sign-drift rules also move R(c) by δ·sign of the per-group feedback (Eq. 8; `h` already signed)."""
        s = before - after
        self.update_evidence(index, s / reduce(s.abs().mean()).clamp_min(1e-12))
        if self.rule == "cumulative_h":
            self.h_sum += torch.as_tensor(h, dtype=self.h_sum.dtype, device=self.h_sum.device)
        if self.drifts:  # only the sign-drift rules read the per-group feedback
            h_c, n_c = per_class_feedback(before, after, groups, self.num_classes, mask, reduce=reduce)
            self.update_ratios(h_c, n_c, h, epoch)

    def selection_frequency(self, index: Tensor) -> Tensor:
        """Share of a sample's post-warm-up visits in which it was selected into 𝒮 (NaN if never seen then)."""
        seen = self.times_seen[index]
        return torch.where(seen > 0, self.times_selected[index] / seen.clamp_min(1), torch.nan)

    def _per_batch(self, labels: Tensor, scores: Tensor, ratio: Tensor) -> Tensor:
        order = torch.argsort(scores, stable=True)
        order = order[torch.argsort(labels[order], stable=True)]
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=labels.device)
        counts.index_add_(0, labels, torch.ones_like(labels))  # bincount would read max(labels) back (a sync)
        offsets = torch.cumsum(counts, 0) - counts
        sorted_labels = labels[order]
        rank = torch.arange(labels.numel(), device=labels.device) - offsets[sorted_labels]
        k = torch.ceil(ratio.to(scores.device).double() * counts.double() - 1e-9).long()
        mask = torch.zeros_like(labels, dtype=torch.bool)
        mask[order] = rank < k[sorted_labels]
        return mask

    # ------------------------------------------------------------------------------------------- update
    @torch.no_grad()
    def update_ratios(self, h_c: Tensor, n_c: Tensor, h: Tensor | float, epoch: int) -> None:
        """Sign-drift rules: EMA of the feedback (per group, or global for `global`), then R += δ·sign(EMA).

        `h_c` (paper sign), `n_c` (per-group |𝒮| counts) and `h` must be global (all-reduced) values so that R
        stays identical on all ranks. Nothing changes when 𝒮 is empty (n_c all zero), nor for the `evidence` and
        `schedule` rules (their R does not drift).
        """
        if not self.drifts:
            return
        b = self.h_momentum
        if self.rule == "global":
            any_selected = n_c.to(self.h_ema_global.device).sum() > 0  # a tensor: no host-device sync
            h_t = torch.as_tensor(h, dtype=self.h_ema_global.dtype, device=self.h_ema_global.device)
            moved = b * self.h_ema_global + (1 - b) * h_t
            self.h_ema_global.copy_(torch.where(any_selected, moved, self.h_ema_global))
            step = self.delta * torch.sign(self.h_ema_global)
            present = any_selected.expand_as(self.ratio)
        else:
            present = n_c.to(self.h_ema.device) > 0
            h_c = h_c.to(self.h_ema)
            self.h_ema.copy_(torch.where(present, b * self.h_ema + (1 - b) * h_c, self.h_ema))
            step = self.delta * torch.sign(self.h_ema)
        if epoch >= self.warmup_epochs:
            new = (self.ratio + step).clamp(self.r_min, self.r_max)
            self.ratio.copy_(torch.where(present, new, self.ratio))

    def extra_repr(self) -> str:
        return f"rule={self.rule}, eps0={self.eps0}, delta={self.delta}, r=[{self.r_min}, {self.r_max}]"


def two_segment_split(values: Tensor) -> int:
    """k maximizing the between-segment variance k(n−k)·(m₁ − m₂)² of values[:k] vs values[k:], m₁ < m₂ (Otsu).

    The least-squares fit of a two-level step function to a sequence (one change point); 0 < k < n.
    """
    n = values.numel()
    csum = torch.cumsum(values, 0)
    k = torch.arange(1, n, device=values.device, dtype=values.dtype)
    m1 = csum[:-1] / k
    m2 = (csum[-1] - csum[:-1]) / (n - k)
    stat = k * (n - k) * (m2 - m1).clamp_min(0) ** 2
    return int(stat.argmax()) + 1


@dataclass(frozen=True)
class TwoGaussians:
    """A two-component 1-D Gaussian mixture: weights, means and variances, low-mean component first."""

    weight: Tensor
    mean: Tensor
    var: Tensor


def fit_two_gaussians(values: Tensor, iters: int = 50) -> TwoGaussians:
    """Two-component 1-D Gaussian mixture fitted by EM from the Otsu split (unequal variances allowed)."""
    v = values.double().flatten()
    n = v.numel()
    v_sorted = torch.sort(v).values
    k = two_segment_split(v_sorted)
    lo, hi = v_sorted[:k], v_sorted[k:]
    w = torch.tensor([k / n, 1 - k / n], dtype=v.dtype, device=v.device)
    mu = torch.stack([lo.mean(), hi.mean()])
    floor = (v.var() * 1e-3).clamp_min(1e-12)
    var = torch.stack([lo.var(unbiased=False), hi.var(unbiased=False)]).clamp_min(floor)
    for _ in range(iters):
        log_p = -0.5 * ((v[:, None] - mu) ** 2 / var + var.log()) + w.clamp_min(1e-12).log()
        r = torch.softmax(log_p, dim=1)
        nk = r.sum(0).clamp_min(1e-9)
        w, mu = nk / n, (r * v[:, None]).sum(0) / nk
        var = ((r * (v[:, None] - mu) ** 2).sum(0) / nk).clamp_min(floor)
    order = torch.argsort(mu)
    return TwoGaussians(w[order], mu[order], var[order])


def two_gaussian_weight(values: Tensor, iters: int = 50) -> float:
    """Weight of the low-mean component of a two-component 1-D Gaussian mixture fitted by EM (Otsu start).

    The mixture-proportion reading of the small-loss trick (as in DivideMix's GMM, Li et al. 2020): the share of a
    group's losses that belongs to the low-loss (clean) component.
    """
    return float(fit_two_gaussians(values, iters).weight[0])


def ceil_count(ratio: float, n: int) -> int:
    """ceil(ratio·n) robust to float error (used by tests and diagnostics)."""
    return math.ceil(ratio * n - 1e-9)
