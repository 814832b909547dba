"""Meta-gradients of a clean loss through student SGD steps: JVP surrogates and the exact unrolled reference.

Setting (EMLC Eqs. 3-6): the student loss on a batch is L_S(θ, α) = (1/N) Σ_i ℓ_i(θ, α), one SGD step gives
θ' = θ − η ∇_θ L_S, and the meta-objective is the clean loss L(θ'). With g_w = ∇L(θ') (Prop. 1):

    dL/dα = −η g_wᵀ ∇²_{θα} L_S(θ, α)                                                       (Eq. 7)

* Soft targets, ℓ_i = −⟨q_i(α), log p(x_i; θ)⟩: by Prop. 3, ∇²_{θα} ℓ_i = −J_θ(i)ᵀ J_α(i), so
  dL/dα = (1/N) Σ_i u_iᵀ J_α(q_i) with u_i = J_{log p(x_i; θ)}·(η g_w) (Eq. 10), i.e. the gradient w.r.t. α of the
  surrogate  (1/N) Σ_i ⟨sg(u_i), q_i(α)⟩  (`soft_target_surrogate`).
* Per-sample weights, L_S = (1/N) Σ_i w_i(α) ℓ_i(θ): dL/dα = −(1/N) Σ_i s_i ∂w_i/∂α with s_i = ∇ℓ_i·(η g_w), the
  gradient of  −(1/N) Σ_i sg(s_i) w_i(α)  (`weight_surrogate`).
* k steps (Prop. 2, Eq. 11, H_θθ ≈ I): Σ_j c_j (1/N_j) Σ_i ⟨sg(u_i^(j)), q_i^(j)⟩ where u^(j) is the JVP at snapshot
  θ_j on batch j, paired with *that* batch's targets q^(j), and c_j = η_j Π_{τ>j} (1 − η_τ) (= γ^(k−1−j) η for a
  constant η, γ = 1 − η).

η enters through the tangent (v = η ⊙ g_w per parameter, `Lookahead.scale`), so parameter groups with different
learning rates and SGD momentum/Nesterov/dampening are handled exactly (`lookahead.py`). The surrogates are exact for the one-step
case whenever the student's update is an SGD step (with momentum, weight decay): weight decay and the momentum
buffer do not depend on α. For other optimizers η is the group's lr and the result is a first-order approximation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lnl.hypergrad.functional import ParamDict, functional_forward
from lnl.hypergrad.jvp import logprob_jvp
from lnl.hypergrad.lookahead import Lookahead
from lnl.numerics import wide


# --------------------------------------------------------------------------- clean gradient
def clean_grad(
    module: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor] | None,
    x: Any,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> tuple[Tensor, ParamDict]:
    """(L(θ'), g_w = ∇_θ L(θ')) on a clean batch, functional with cloned buffers (Prop. 1's g_w; no `.grad`)."""
    leaves = {
        n: p if (p.requires_grad and p.is_leaf) else p.detach().requires_grad_(True)
        for n, p in params.items()
    }
    with torch.enable_grad():
        loss = loss_fn(wide(functional_forward(module, leaves, buffers, x)), y)
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    out = {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(leaves.items(), grads)}
    return loss.detach(), out


# --------------------------------------------------------------------------- surrogates
def soft_target_surrogate(u: Tensor, q: Tensor, denom: float | None = None) -> Tensor:
    """(1/N) Σ_i ⟨sg(u_i), q_i⟩ (Eq. 10): its gradient w.r.t. the targets' parameters is the meta-gradient."""
    n = float(q.shape[0] if denom is None else denom)
    return (u.detach().to(q.dtype) * q).sum() / n


def weight_surrogate(s: Tensor, weights: Tensor, denom: float | None = None) -> Tensor:
    """−(1/N) Σ_i sg(s_i)·w_i: meta-gradient surrogate for per-sample loss weights (L2RW / MW-Net)."""
    n = float(weights.shape[0] if denom is None else denom)
    return -(s.detach().to(weights.dtype) * weights).sum() / n


def onestep_surrogate(
    module: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor] | None,
    x: Any,
    q: Tensor,
    tangent: Mapping[str, Tensor],
    denom: float | None = None,
) -> tuple[Tensor, Tensor]:
    """(surrogate, u): u = J_{log p(x; θ)}·v at the pre-step snapshot θ (v = η ⊙ g_w), Eq. 10 for one step.

    `x` is exactly the batch of the student's training forward (train-mode BN sees the same batch statistics);
    `q` gives targets for its first len(q) rows (further rows, e.g. gold samples, do not depend on α) and
    `denom` is the N of the student loss (default len(q)).
    """
    _, u = logprob_jvp(module, params, buffers, x, tangent)
    u = u[: q.shape[0]]
    return soft_target_surrogate(u, q, denom), u


def kstep_coefficients(lookaheads: Sequence[Lookahead]) -> list[Lookahead]:
    """c_j = η_j Π_{τ=j+1}^{k−1} (1 − η_τ) per parameter (Prop. 2 / Eq. 11 with γ = 1 − η; the official discount
    (1 − η)^{k−1−j}): step j's slope as seen from the params after the last step, as a `Lookahead` to `scale` by."""
    out: list[Lookahead] = []
    for j, step in enumerate(lookaheads):
        coef: dict[str, float] = {}
        for name, eta in step.eta.items():
            c = eta
            for later in lookaheads[j + 1 :]:
                c *= 1.0 - later.eta[name]
            coef[name] = c
        out.append(Lookahead.from_eta(coef))
    return out


def kstep_denominators(
    rows: Sequence[int], denoms: Sequence[float | None] | None, reduction: Literal["sum", "mean"]
) -> list[float]:
    """The N_j dividing step j's Σ_i ⟨u_i, q_i⟩: its own N_j (`sum` of per-step means) or, for `mean`, Σ_j N_j.

    `mean` is the official EMLC `meta.teacher_backward_ms` (`meta_loss`: η · `batch_dot_product.mean()` over the
    rows of all k look-ahead steps concatenated); `sum` adds k per-step means (k times larger for equal batches).
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction = {reduction!r}: expected 'sum' or 'mean'")
    own = [float(r if denoms is None or denoms[j] is None else denoms[j]) for j, r in enumerate(rows)]
    return own if reduction == "sum" else [sum(own)] * len(own)


def kstep_surrogate(
    module: nn.Module,
    snapshots: Sequence[Mapping[str, Tensor]],
    buffers: Mapping[str, Tensor] | None,
    xs: Sequence[Any],
    qs: Sequence[Tensor],
    g_w: Mapping[str, Tensor],
    lookaheads: Sequence[Lookahead],
    reduction: Literal["sum", "mean"] = "mean",
    denoms: Sequence[float | None] | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """Σ_j c_j·(1/N_j) Σ_i ⟨sg(u_i^(j)), q_i^(j)⟩ (Eq. 11): JVP j at snapshot θ_j on batch j with batch j's targets.

    N_j from `kstep_denominators`: `mean` (default, the official code) divides by the rows of all k steps.

    `lookaheads[j]` is step j's look-ahead (its η); g_w is the clean gradient at the params after the last step.
    Returns the surrogate and the per-step u^(j) (already scaled by c_j).
    """
    k = len(snapshots)
    if not (len(xs) == len(qs) == len(lookaheads) == k):
        raise ValueError(
            f"k-step lists differ in length: {k} snapshots, {len(xs)} x, {len(qs)} q, {len(lookaheads)} look-aheads"
        )
    discounted = kstep_coefficients(lookaheads)
    ns = kstep_denominators([q.shape[0] for q in qs], denoms, reduction)
    total: Tensor | None = None
    us: list[Tensor] = []
    for j in range(k):
        term, u = onestep_surrogate(
            module, snapshots[j], buffers, xs[j], qs[j], discounted[j].scale(g_w), ns[j]
        )
        total = term if total is None else total + term
        us.append(u)
    assert total is not None
    return total, us


# --------------------------------------------------------------------------- exact unrolled reference
def unrolled_metagrad(
    inner_loss: Tensor,
    params: Mapping[str, Tensor],
    meta_params: Sequence[Tensor],
    module: nn.Module,
    buffers: Mapping[str, Tensor] | None,
    clean_x: Any,
    clean_y: Tensor,
    lookahead: Lookahead,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> tuple[list[Tensor], Tensor, ParamDict]:
    """Exact dL(θ'(α))/dα through one differentiable step θ'(α) = lookahead.step(θ, ∇_θ L_S(θ, α)) (Eqs. 3-5, 13-15).

    `inner_loss` = L_S must have been computed from the leaf tensors `params` (live or snapshot) and depend on α.
    Second order (`create_graph`): the faithful MLC meta step and the oracle for the surrogates. Returns the
    meta-gradients (zeros where unused), the clean loss at θ', and the detached inner gradients ∇_θ L_S (which a
    caller can reuse for the real student step).
    """
    names = list(params)
    grads = torch.autograd.grad(inner_loss, [params[n] for n in names], create_graph=True, allow_unused=True)
    grads_d = {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)}
    new_params = lookahead.step(params, grads_d)
    clean_loss = loss_fn(wide(functional_forward(module, new_params, buffers, clean_x)), clean_y)
    meta = torch.autograd.grad(clean_loss, list(meta_params), allow_unused=True)
    meta_grads = [torch.zeros_like(p) if g is None else g for p, g in zip(meta_params, meta)]
    return meta_grads, clean_loss.detach(), {n: g.detach() for n, g in grads_d.items()}
