"""Meta-gradients of per-sample loss weights: L2RW (Ren et al. 2018, Alg. 1) and MW-Net (Shu et al. 2019, Eqs. 3-5).

The student loss on a noisy batch is the weighted L_c(θ) = Σ_i c_i ℓ_i(θ) with c_i = w_i/n (or w_i/Σ_j w_j), one
virtual step gives θ'(c), and the meta-objective is the clean loss L(θ'(c)). The step (`Lookahead`: the
optimizer's own SGD step, momentum and weight decay included, or a plain one) is affine in g = ∇L_c(θ) with the
per-parameter slope −η. With g_w = ∇L(θ') at that θ' (momentum and decay included) the chain rule gives, exactly,

    ∂L(θ'(c))/∂c_i = −⟨g_w, η ⊙ ∇ℓ_i(θ)⟩ = −s_i,

so for w = V(ℓ; α) the meta-gradient is ∇_α of the surrogate −Σ_i sg(s_i)·c_i(α) (`weight_surrogate` with N = 1),
and L2RW's ε-gradient at ε = 0 is −s_i/n. `weight_sensitivities` computes every s_i in one forward-mode JVP of the
per-sample losses along η ⊙ g_w (the `jvp` estimator); `unrolled_metagrad(weighted_loss(ℓ, c), ...)`
differentiates through the step with create_graph, as the official codes do (the `unrolled` estimator and the tests' second path).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lnl.hypergrad.jvp import loss_jvp
from lnl.hypergrad.lookahead import Lookahead


def weight_coefficients(w: Tensor, normalize: bool = False) -> Tensor:
    """c = w/n (`MW-Net.py`), or w/Σ_j w_j when `normalize` (the WRN-28-10 script; w itself if the sum is 0)."""
    if not normalize:
        return w / w.shape[0]
    total = w.sum()
    nonzero = total != 0
    return torch.where(nonzero, w / torch.where(nonzero, total, torch.ones_like(total)), w)


def weighted_loss(losses: Tensor, coefficients: Tensor) -> Tensor:
    """L_c = Σ_i c_i ℓ_i (per-sample losses [B], coefficients [B])."""
    return (coefficients.to(losses.dtype) * losses).sum()


def weight_sensitivities(
    module: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor] | None,
    x: Any,
    y: Tensor,
    g_w: Mapping[str, Tensor],
    lookahead: Lookahead,
) -> Tensor:
    """s_i = ⟨∇ℓ_i(θ), η ⊙ g_w⟩ [B] at the pre-step θ on exactly the student's batch, by one forward-mode JVP of the
    per-sample CE losses; ∂L(θ')/∂c_i = −s_i."""
    return loss_jvp(module, params, buffers, x, y, lookahead.scale(g_w))[1]


def l2rw_weights(eps_grad: Tensor, total: Tensor | None = None) -> Tensor:
    """w = max(−∂L/∂ε, 0) / Σ_j max(−∂L/∂ε_j, 0), 0 where every entry is 0 (L2RW Alg. 1 lines 10-11).

    `total` replaces the batch's own sum (under DDP: the mean over ranks of each rank's sum, so that the averaged
    gradients equal those of the global batch).
    """
    w = torch.clamp(-eps_grad.detach(), min=0)
    total = w.sum() if total is None else total
    return w / (total + (total == 0).to(total.dtype))
