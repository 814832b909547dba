"""Cross-fitting: K networks trained in one run, network k never trained on the labels of fold k.

A network judging the label it was trained on has memorized it (class-dependent noise is learnt as if it were
signal), so the label report of a plain CE run ranks wrong labels worse than an out-of-fold classifier. Confident
Learning (Northcutt et al., "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021, §4.1 and
Eq. 2) scores each label by its out-of-fold self-confidence p̂_{−k(i)}(ỹ_i | x_i): the probability of the given
label under a model whose training set excluded sample i. `CrossFitEnsemble` gives that within one training run:
sample i belongs to fold k(i) = h_s(i) mod K (h_s a seeded 32-bit integer hash of the index; the seed is a buffer,
so a checkpoint restores the folds); network k's loss is the mean cross-entropy over the batch's samples with
k(i) ≠ k (the fold-k terms are masked out of the loss, so their labels never reach network k's gradient); network
k(i) then judges sample i. Predictions (validation, test, `lnl predict`) use the mean softmax of the K networks,
returned as its log (valid logits).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

_MASK32 = 0xFFFFFFFF


def fold_of(index: Tensor, folds: int, seed: Tensor | int) -> Tensor:
    """k(i) = h_s(i) mod K: Wellons' "lowbias32" integer hash of (i + 0x9E3779B9·s) mod 2^32, in int64 arithmetic
    without overflow (`_mul32`), so it runs on the device without a read-back; same (i, s, K) → same fold."""
    s = torch.as_tensor(seed, dtype=torch.int64, device=index.device) & _MASK32
    x = (index.long() + _mul32(s, 0x9E3779B9)) & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    x = x ^ (x >> 16)
    return x % folds


def _mul32(x: Tensor, c: int) -> Tensor:
    """x·c mod 2^32 for 0 ≤ x, c < 2^32, from 16-bit halves of c (every int64 product stays below 2^48)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _MASK32


class CrossFitEnsemble(nn.Module):
    """K networks with fold-masked losses (module docstring). `forward` is the log of their mean softmax."""

    def __init__(self, nets: list[nn.Module], seed: int) -> None:
        super().__init__()
        if len(nets) < 2:
            raise ValueError(f"cross-fitting needs at least 2 networks, got {len(nets)}")
        self.nets = nn.ModuleList(nets)
        self.register_buffer("fold_seed", torch.tensor(seed & _MASK32, dtype=torch.int64))

    @property
    def folds(self) -> int:
        return len(self.nets)

    def fold(self, index: Tensor) -> Tensor:
        """k(i) of each index (`fold_of` with this ensemble's K and seed)."""
        return fold_of(index, self.folds, self.fold_seed)

    def members(self, x: Tensor) -> Tensor:
        """Logits of every network, [K, B, C] (a loop: K small forwards, BN statistics per network)."""
        return torch.stack([net(x) for net in self.nets])

    def forward(self, x: Tensor) -> Tensor:
        return mean_softmax_logits(self.members(x))

    def out_of_fold(self, members: Tensor, index: Tensor) -> Tensor:
        """Row i of network k(i): the logits of the one network that never trained on sample i's label, [B, C]."""
        pick = self.fold(index)[None, :, None].expand(1, *members.shape[1:])
        return members.gather(0, pick).squeeze(0)

    def loss(self, members: Tensor, labels: Tensor, index: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """Σ_k mean_{i in batch, k(i) ≠ k} CE(z_k(x_i), ỹ_i): each network's gradient is that of its own masked
        mean loss (the K parameter sets are disjoint), as in a plain CE step on its K − 1 folds."""
        k, b, c = members.shape
        per = F.cross_entropy(members.reshape(k * b, c), labels.repeat(k), reduction="none",
                              label_smoothing=label_smoothing).view(k, b)  # fmt: skip
        keep = self.fold(index)[None, :] != torch.arange(k, device=index.device)[:, None]
        per = torch.where(keep, per, torch.zeros_like(per))  # fold-k labels: no term, no gradient
        return (per.sum(1) / _mean_count_over_ranks(keep.sum(1).to(per.dtype)).clamp_min(1)).sum()


def _mean_count_over_ranks(count: Tensor) -> Tensor:
    """Each network's kept-sample count averaged over DDP ranks (the count itself in one process): DDP averages
    the ranks' gradients, so Σ_rank (local sum / mean count) / world is the global batch's masked mean."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(count)  # a collective, no read-back to the host
        count = count / dist.get_world_size()
    return count


def mean_softmax_logits(members: Tensor) -> Tensor:
    """log((1/K) Σ_k softmax(z_k)), [B, C]: the ensemble's prediction as logits (computed in log space)."""
    return torch.logsumexp(F.log_softmax(members.float(), dim=-1), dim=0) - math.log(members.shape[0])
