"""Two-level fits of a group's sorted loss scores: the Otsu split and a two-component 1-D Gaussian mixture.

Used by DML's `estimated` selection rule to estimate a group's clean share from its bank of small-loss scores
(the mixture-proportion reading of the small-loss trick, as DivideMix's GMM, Li et al. 2020).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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
