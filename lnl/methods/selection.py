"""DML's small-loss selection of trusted samples 𝒮 with a loss memory bank and h-driven ratios R(c) (DESIGN 4.5).

The paper's Eq. 8 is garbled; this is the documented rule (`rule: per_class`, default):

- score of sample i: the student's per-sample CE w.r.t. its noisy label; the bank keeps its EMA (momentum 0.9),
  updated whenever the sample is seen (the first observation initialises it);
- thresholds: per noisy class c, τ_c = quantile at R(c) (linear interpolation) of the bank scores of class c over
  the samples seen so far; refreshed every `refresh_every` steps (None: at the first step of every epoch) and at
  every step of epoch 0, while the bank fills for the first time;
- selection: i ∈ 𝒮 ⇔ bank[i] ≤ τ_{ỹ_i} (may be empty);
- update: per-class first-order feedback h(c) → EMA (β = 0.99, zero-initialised, only for classes present in 𝒮 this
  step) → R(c) ← clip(R(c) + δ·sign(EMA h(c)), r_min, r_max) for those classes. During `warmup_epochs` the EMA
  accumulates but R stays at ε0.

Alternatives: `global` (one R shared by all classes, driven by the global h, so it also works with exact feedback;
thresholds stay per-class quantiles at that R), `per_batch` (no bank: the ceil(R(c)·n_c) smallest current scores of
each class in the batch, n_c counted in the local batch), `schedule` (Co-teaching's fixed schedule
R(t) = 1 − τ·min(epoch / schedule_epochs, 1) from a given noise rate τ, bank thresholds, no feedback).

Everything is a registered buffer (checkpointed; the bank resizes itself on load). Under DDP the (index, label,
score) updates are all-gathered before they are applied, so bank, thresholds and R are identical on all ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lnl.errors import ConfigError

SelectionRule = Literal["per_class", "global", "per_batch", "schedule"]
RULES: tuple[str, ...] = ("per_class", "global", "per_batch", "schedule")


@dataclass
class SelectionConfig:
    """Options of DML's selection (`model.init_args.selection` in a config; DESIGN 4.5 defaults)."""

    rule: str = "per_class"
    eps0: float = 0.2
    delta: float = 1e-3
    r_min: float = 0.05
    r_max: float = 0.9
    bank_momentum: float = 0.9
    h_momentum: float = 0.99
    refresh_every: int | None = None
    warmup_epochs: int = 1
    noise_rate: float | None = None
    schedule_epochs: int = 10


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
    """Per-class small-loss selection with an EMA loss bank and feedback-driven ratios R(c) (DESIGN 4.5)."""

    def __init__(
        self,
        num_classes: int,
        num_samples: int = 0,
        *,
        rule: str = "per_class",
        eps0: float = 0.2,
        delta: float = 1e-3,
        r_min: float = 0.05,
        r_max: float = 0.9,
        bank_momentum: float = 0.9,
        h_momentum: float = 0.99,
        refresh_every: int | None = None,
        warmup_epochs: int = 1,
        noise_rate: float | None = None,
        schedule_epochs: int = 10,
    ) -> None:
        super().__init__()
        if rule not in RULES:
            raise ConfigError(f"selection.rule = {rule!r}: allowed values are {', '.join(RULES)}")
        if not 0.0 < r_min <= r_max <= 1.0:
            raise ConfigError(f"selection r_min, r_max = {r_min}, {r_max}: need 0 < r_min <= r_max <= 1")
        if not 0.0 < eps0 <= 1.0:
            raise ConfigError(f"selection.eps0 = {eps0}: must be in (0, 1]")
        if refresh_every is not None and refresh_every < 1:
            raise ConfigError(
                f"selection.refresh_every = {refresh_every}: must be >= 1 or null (once per epoch)"
            )
        if rule == "schedule" and (noise_rate is None or not 0.0 <= noise_rate < 1.0):
            raise ConfigError(
                f"selection.noise_rate = {noise_rate}: rule 'schedule' needs a noise rate in [0, 1)"
            )
        self.num_classes, self.rule = num_classes, rule
        self.eps0, self.delta, self.r_min, self.r_max = eps0, delta, r_min, r_max
        self.bank_momentum, self.h_momentum = bank_momentum, h_momentum
        self.refresh_every, self.warmup_epochs = refresh_every, warmup_epochs
        self.noise_rate, self.schedule_epochs = noise_rate, schedule_epochs
        self.fixed_size = False
        self.register_buffer("bank", torch.zeros(num_samples))
        self.register_buffer("bank_labels", torch.full((num_samples,), -1, dtype=torch.long))
        self.register_buffer("ratio", torch.full((num_classes,), float(eps0)))
        self.register_buffer("h_ema", torch.zeros(num_classes))
        self.register_buffer("h_ema_global", torch.zeros(()))
        self.register_buffer("thresholds", torch.full((num_classes,), float("inf")))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_refresh_epoch", torch.full((), -1, dtype=torch.long))

    # ----------------------------------------------------------------------------------------------- bank
    def preallocate(self, n: int) -> None:
        """Size the bank for sample indices < n once (the data set's size); it then no longer grows on demand."""
        self._ensure_size(n)
        self.fixed_size = n > 0

    def _ensure_size(self, n: int) -> None:
        if n > self.bank.numel():
            extra = n - self.bank.numel()
            self.bank = torch.cat([self.bank, self.bank.new_zeros(extra)])
            self.bank_labels = torch.cat([self.bank_labels, self.bank_labels.new_full((extra,), -1)])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        n = state_dict.get(prefix + "bank")
        if n is not None and n.numel() != self.bank.numel():
            self.bank = self.bank.new_zeros(n.numel())
            self.bank_labels = self.bank_labels.new_full((n.numel(),), -1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def update_bank(self, index: Tensor, labels: Tensor, scores: Tensor) -> None:
        """EMA-update the bank with this step's (index, noisy label, score), all-gathered across ranks."""
        rows = all_gather_rows(torch.stack([index.double(), labels.double(), scores.detach().double()], 1))
        idx, lab, sc = rows[:, 0].long(), rows[:, 1].long(), rows[:, 2].to(self.bank.dtype)
        if idx.numel() == 0:
            return
        if not self.fixed_size:  # a preallocated bank needs no host sync to check its size
            self._ensure_size(int(idx.max().item()) + 1)
        # duplicates (DistributedSampler padding): every copy takes its first occurrence's values, so the
        # (unordered) duplicate writes below all write the same thing, deterministically on every rank
        order = torch.arange(idx.numel(), device=idx.device)
        first = torch.full_like(self.bank_labels, idx.numel()).scatter_reduce(0, idx, order, reduce="amin")
        src = first[idx]
        lab, sc = lab[src], sc[src]
        seen = self.bank_labels[idx] >= 0
        m = self.bank_momentum
        self.bank[idx] = torch.where(seen, m * self.bank[idx] + (1 - m) * sc, sc)
        self.bank_labels[idx] = lab

    # ------------------------------------------------------------------------------------------ thresholds
    def current_ratio(self, epoch: int) -> Tensor:
        """R(c) in effect: ε0 during warm-up (feedback rules), the schedule for `schedule`, else the learnt R."""
        if self.rule == "schedule":
            r = 1.0 - float(self.noise_rate) * min(epoch / max(self.schedule_epochs, 1), 1.0)
            return torch.full_like(self.ratio, r)
        if epoch < self.warmup_epochs:
            return torch.full_like(self.ratio, self.eps0)
        return self.ratio

    @torch.no_grad()
    def refresh_thresholds(self, epoch: int) -> None:
        """τ_c = linear-interpolated quantile at R(c) of the seen bank scores of class c (+inf: class unseen)."""
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

    def _needs_refresh(self, epoch: int) -> bool:
        if epoch == 0:
            return True
        if self.refresh_every is None:
            return int(self.last_refresh_epoch) != epoch
        return int(self.step) % self.refresh_every == 0

    # ------------------------------------------------------------------------------------------- select
    @torch.no_grad()
    def select(self, index: Tensor, labels: Tensor, scores: Tensor, epoch: int) -> Tensor:
        """Update the bank with this batch, refresh τ when due, and return the bool mask of 𝒮 for the batch."""
        if self.rule == "per_batch":
            mask = self._per_batch(labels, scores.detach(), self.current_ratio(epoch))
        else:
            self.update_bank(index, labels, scores)
            if self._needs_refresh(epoch):
                self.refresh_thresholds(epoch)
            mask = self.bank[index] <= self.thresholds[labels]
        self.step += 1
        return mask

    def _per_batch(self, labels: Tensor, scores: Tensor, ratio: Tensor) -> Tensor:
        order = torch.argsort(scores, stable=True)
        order = order[torch.argsort(labels[order], stable=True)]
        counts = torch.bincount(labels, minlength=self.num_classes)
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
        """EMA of the feedback (per class for per_class/per_batch, global for global), then R += δ·sign(EMA).

        `h_c` (paper sign), `n_c` (per-class |𝒮| counts) and `h` must be global (all-reduced) values so that R
        stays identical on all ranks. Nothing changes when 𝒮 is empty (n_c all zero).
        """
        if self.rule == "schedule":
            return
        b = self.h_momentum
        if self.rule == "global":
            if float(n_c.sum()) <= 0:
                return
            self.h_ema_global.mul_(b).add_((1 - b) * torch.as_tensor(h, dtype=self.h_ema_global.dtype))
            step = self.delta * torch.sign(self.h_ema_global)
            present = torch.ones_like(self.ratio, dtype=torch.bool)
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


def ceil_count(ratio: float, n: int) -> int:
    """ceil(ratio·n) robust to float error (used by tests and diagnostics)."""
    return math.ceil(ratio * n - 1e-9)
