"""Meta-gradients of per-sample loss weights: L2RW (Ren et al. 2018, Alg. 1) and MW-Net (Shu et al. 2019, Eqs. 3-5).

The student loss on a noisy batch is the weighted L_c(θ) = Σ_i c_i ℓ_i(θ) with c_i = w_i/n (or w_i/Σ_j w_j), one
virtual step gives θ'(c), and the meta-objective is the clean loss L(θ'(c)). For `torch.optim.SGD`,

    d = g + λθ,   b' = μb + (1 − τ)d  (b' = d on the first step),   θ' = θ − lr·b'  (Nesterov: θ − lr·(d + μb'))

with g = ∇L_c(θ): weight decay λθ and the momentum buffer b do not depend on c, so θ' is affine in g with the
per-parameter slope −η, η = lr(1 − τ) (lr on the first step, lr(1 + μ(1 − τ)) with Nesterov; `effective_lrs`).
With g_w = ∇L(θ') at that θ' (momentum and decay included) the chain rule gives, exactly,

    ∂L(θ'(c))/∂c_i = −⟨g_w, η ⊙ ∇ℓ_i(θ)⟩ = −s_i,

so for w = V(ℓ; α) the meta-gradient is ∇_α of the surrogate −Σ_i sg(s_i)·c_i(α) (`weight_surrogate` with N = 1),
and L2RW's ε-gradient at ε = 0 is −s_i/n. `weight_sensitivities` computes every s_i in one forward-mode JVP of the
per-sample losses along η ⊙ g_w (the `jvp` estimator); `unrolled_metagrad(weighted_loss(ℓ, c), ...)` differentiates through the
step with create_graph, as the official codes do (the `unrolled` estimator and the tests' second path).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lnl.hypergrad.functional import ParamDict
from lnl.hypergrad.jvp import loss_jvp
from lnl.hypergrad.metagrad import (
    StepFn,
    effective_lrs,
    scale_tangent,
    sgd_lookahead,
    sgd_step_fn,
)

VirtualStep = Literal["sgd", "optimizer"]


def virtual_step(
    optimizer: torch.optim.Optimizer, named: Mapping[str, Tensor], kind: VirtualStep = "sgd"
) -> tuple[StepFn, dict[str, float]]:
    """(step_fn, η): a differentiable look-ahead θ' = step_fn(θ, g) of the student and its slope η = −∂θ'/∂g.

    `sgd`: the official codes' plain step θ' = θ − lr·g at each group's current lr (MW-Net's `update_params`,
    L2RW's `vv - gg`). `optimizer`: the optimizer's own next SGD step (momentum buffer, weight decay, Nesterov;
    needs `torch.optim.SGD`).
    """
    if kind == "optimizer":
        return sgd_step_fn(optimizer, named), effective_lrs(optimizer, named)  # type: ignore[arg-type]
    if kind != "sgd":
        raise ValueError(f"kind = {kind!r}: expected 'sgd' or 'optimizer'")
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    lrs = {n: float(group_of[id(p)]["lr"]) for n, p in named.items()}
    return (lambda params, grads: sgd_lookahead(params, grads, lrs)), lrs


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


def lookahead(step_fn: StepFn, params: Mapping[str, Tensor], grads: Mapping[str, Tensor]) -> ParamDict:
    """θ' = step_fn(θ, g) as detached tensors (the `jvp` estimator needs its value only)."""
    with torch.no_grad():
        return {n: p.detach() for n, p in step_fn({n: p.detach() for n, p in params.items()}, grads).items()}


def weight_sensitivities(
    module: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor] | None,
    x: Any,
    y: Tensor,
    g_w: Mapping[str, Tensor],
    lrs: float | Mapping[str, float],
) -> Tensor:
    """s_i = ⟨∇ℓ_i(θ), η ⊙ g_w⟩ [B] at the pre-step θ on exactly the student's batch, by one forward-mode JVP of the
    per-sample CE losses; ∂L(θ')/∂c_i = −s_i."""
    return loss_jvp(module, params, buffers, x, y, scale_tangent(g_w, lrs))[1]


def l2rw_weights(eps_grad: Tensor, total: Tensor | None = None) -> Tensor:
    """w = max(−∂L/∂ε, 0) / Σ_j max(−∂L/∂ε_j, 0), 0 where every entry is 0 (L2RW Alg. 1 lines 10-11).

    `total` replaces the batch's own sum (under DDP: the mean over ranks of each rank's sum, so that the averaged
    gradients equal those of the global batch).
    """
    w = torch.clamp(-eps_grad.detach(), min=0)
    total = w.sum() if total is None else total
    return w / (total + (total == 0).to(total.dtype))
