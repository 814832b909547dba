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

Rules for R(c) (`rule`): registered objects in `selection_rules.py` (the estimated clean share, the paper's sign
drift, a global drift, per-batch, the literal cumulative-h threshold, Co-teaching's schedule).

During `warmup_epochs` R stays at ε0 (feedback rules). Everything is a registered buffer (checkpointed; the bank
resizes itself on load). Under DDP the (index, group, score) and (index, evidence) updates are all-gathered before
they are applied, so bank, thresholds and R are identical on all ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lnl.errors import ConfigError
from lnl.hypergrad.distributed import all_gather_rows
from lnl.methods.selection_rules import ESTIMATORS, create_rule
from lnl.validation import one_of


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

    def check(self) -> SelectionConfig:
        """This config if every option is in range; a one-line ConfigError naming the first bad one otherwise."""
        create_rule(self.rule)
        if not 0.0 < self.r_min <= self.r_max <= 1.0:
            raise ConfigError(
                f"selection r_min, r_max = {self.r_min}, {self.r_max}: need 0 < r_min <= r_max <= 1"
            )
        if not 0.0 < self.eps0 <= 1.0:
            raise ConfigError(f"selection.eps0 = {self.eps0}: must be in (0, 1]")
        if not self.h_eps0 > 0.0:
            raise ConfigError(f"selection.h_eps0 = {self.h_eps0}: must be > 0 (the paper: ε0 cannot be zero)")
        for name in ("bank_momentum", "h_momentum", "evidence_momentum"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"selection.{name} = {getattr(self, name)}: must be in [0, 1)")
        if self.refresh_every is not None and self.refresh_every < 1:
            raise ConfigError(
                f"selection.refresh_every = {self.refresh_every}: must be >= 1 or null (once per epoch)"
            )
        one_of("selection.estimator", self.estimator, ESTIMATORS)
        return self


def selection_counts(mask: Tensor, y: Tensor, y_true: Tensor) -> Tensor:
    """[selected with known truth, selected and correctly labelled, correctly labelled] (float; sum-reducible)."""
    known = y_true >= 0
    clean = known & (y == y_true)
    return torch.stack([(mask & known).sum(), (mask & clean).sum(), clean.sum()]).float()


class SmallLossSelector(nn.Module):
    """Per-group small-loss selection with an EMA loss bank and ratios R(c) (DML Eq. 8; module docstring)."""

    def __init__(self, num_classes: int, num_samples: int = 0, **options: Any) -> None:
        """`options` are the fields of `SelectionConfig` (checked; an unknown name is a TypeError)."""
        super().__init__()
        self.options = SelectionConfig(**options).check()
        self.policy = create_rule(self.options.rule)
        self.policy.check(self)
        self.num_classes, self.rule, self.fixed_size = num_classes, self.policy.name, False
        eps0 = self.options.eps0
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
        return self.policy.drifts

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
        state_dict.setdefault(prefix + "h_sum", torch.zeros_like(self.h_sum))  # before `cumulative_h`: Σh = 0
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
        m = self.options.bank_momentum
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
        m = self.options.evidence_momentum
        seen = self.evidence_seen[idx]
        self.evidence[idx] = torch.where(seen, m * self.evidence[idx] + (1 - m) * ev, ev)
        self.evidence_seen[idx] = True

    # ------------------------------------------------------------------------------------------ thresholds
    def current_ratio(self, epoch: int) -> Tensor:
        """R(c) in effect: ε0 during warm-up (feedback rules), the schedule for `schedule`, else the learnt R."""
        return self.policy.ratio(self, epoch)

    def h_threshold(self) -> float:
        """`cumulative_h`: the loss threshold ε0 + Σ_t h_t of Eq. 8."""
        return self.options.h_eps0 + float(self.h_sum)

    @torch.no_grad()
    def refresh_thresholds(self, epoch: int) -> None:
        """τ_c = linear-interpolated quantile at R(c) of the seen bank scores of group c (+inf: group unseen)."""
        if self.policy.refresh(self, epoch):  # the rule set the thresholds itself
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

    def needs_refresh(self, epoch: int) -> bool:
        """Whether τ is due for a refresh (every step of epoch 0, then per `refresh_every`, or once per epoch)."""
        if epoch == 0:
            return True
        step, last = self._host_counters()
        if self.options.refresh_every is None:
            return last != epoch
        return step % self.options.refresh_every == 0

    # ------------------------------------------------------------------------------------------- select
    @torch.no_grad()
    def select(self, index: Tensor, groups: Tensor, scores: Tensor, epoch: int) -> Tensor:
        """Update the bank with this batch, refresh τ when due, and return the bool mask of 𝒮 for the batch.

        `groups` is each sample's group (its noisy label, or the teacher's predicted class: Eq. 8's bracket).
        """
        mask = self.policy.select(self, index, groups, scores, epoch)
        self.step += 1
        if self._host is not None:
            self._host[0] += 1
        return mask

    def count(self, index: Tensor, mask: Tensor) -> None:
        """Times each sample was seen and selected after warm-up (all-gathered): its selection frequency."""
        got = self._gathered(index, mask.double())
        if got is not None:
            idx, selected = got
            self.times_seen.index_put_((idx,), torch.ones_like(selected, dtype=self.times_seen.dtype), True)
            self.times_selected.index_put_((idx,), selected.to(self.times_selected.dtype), True)

    @torch.no_grad()
    def record_feedback(self, index: Tensor, groups: Tensor, mask: Tensor, before: Tensor, after: Tensor,
                        h: Tensor, epoch: int, reduce: Callable[[Tensor], Tensor] = lambda t: t) -> None:  # fmt: skip
        """After a student step: the evidence bank gets s_i = ℓ_i(θ) − ℓ_i(θ') over the batch's mean |s| (DML Eq. 7);
        the sign-drift rules also move R(c) by δ·sign of the per-group feedback (Eq. 8; `h` already signed)."""
        s = before - after
        self.update_evidence(index, s / reduce(s.abs().mean()).clamp_min(1e-12))
        self.policy.on_feedback(self, before, after, groups, mask, h, epoch, reduce)

    def selection_frequency(self, index: Tensor) -> Tensor:
        """Share of a sample's post-warm-up visits in which it was selected into 𝒮 (NaN if never seen then)."""
        seen = self.times_seen[index]
        return torch.where(seen > 0, self.times_selected[index] / seen.clamp_min(1), torch.nan)

    # ------------------------------------------------------------------------------------------- update
    @torch.no_grad()
    def update_ratios(self, h_c: Tensor, n_c: Tensor, h: Tensor | float, epoch: int) -> None:
        """Sign-drift rules: EMA of the feedback (per group, or global for `global`), then R += δ·sign(EMA).

        `h_c` (paper sign), `n_c` (per-group |𝒮| counts) and `h` must be global (all-reduced) values so that R
        stays identical on all ranks. Nothing changes when 𝒮 is empty (n_c all zero), nor for rules whose R does
        not drift.
        """
        self.policy.update_ratios(self, h_c, n_c, h, epoch)

    def extra_repr(self) -> str:
        return f"rule={self.rule}, eps0={self.options.eps0}, delta={self.options.delta}, r=[{self.options.r_min}, {self.options.r_max}]"
