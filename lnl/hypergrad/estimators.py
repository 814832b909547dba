"""Hypergradient estimators, picked by name (`hypergrad: jvp | unrolled`), kept apart from the methods' loops.

Two families, each with the faithful second-order estimator (`unrolled`: differentiate through a virtual step with
create_graph, as the original codes do) and lnl's first-order-cost one (`jvp`: the same value from one forward-mode
JVP and one clean gradient, tested against `unrolled` in float64):

- soft targets q(α) (EMLC Eqs. 10-12, MLC): the student steps on softCE(S(x), q); the meta-gradient of the clean
  loss at θ' w.r.t. α. A student step leaves a `StudentStep` record; `meta_gradient` consumes k of them.
- per-sample weights c(α) (MW-Net Eqs. 3-5, L2RW Alg. 1): a virtual step on Σ_i c_i ℓ_i; the meta-gradient
  w.r.t. α (MW-Net's weight net, or L2RW's ε itself). `jvp` uses ∂L(θ'(c))/∂c_i = −s_i (`weights.py`).

Under DDP the `jvp` estimators average every gradient they compute (g_w, virtual gradients) over ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from lnl.errors import ConfigError
from lnl.hypergrad.distributed import all_reduce_mean_dict
from lnl.hypergrad.functional import ParamDict, named_params, snapshot_params
from lnl.hypergrad.lookahead import Lookahead
from lnl.hypergrad.metagrad import (
    clean_grad,
    kstep_denominators,
    kstep_surrogate,
    soft_target_surrogate,
    unrolled_metagrad,
    weight_surrogate,
)
from lnl.hypergrad.weights import weight_sensitivities, weighted_loss
from lnl.losses import soft_cross_entropy
from lnl.validation import one_of

Grads = list[Tensor | None]
Batch = tuple[Any, Tensor]


def student_loss(logits: Tensor, targets: Tensor, n_targets: int) -> Tensor:
    """softCE over the first `n_targets` rows (the noisy batch's q) plus, when rows follow (`mix_gold`'s gold
    half, one-hot), softCE over those: the sum of two means, as the official EMLC/MLC `meta.py`."""
    loss = soft_cross_entropy(logits[:n_targets], targets[:n_targets])
    if logits.shape[0] > n_targets:
        loss = loss + soft_cross_entropy(logits[n_targets:], targets[n_targets:])
    return loss


def add_grads(a: Sequence[Tensor | None], b: Sequence[Tensor | None]) -> Grads:
    """Elementwise sum of two gradient lists from `autograd.grad(..., allow_unused=True)` (None = zero)."""
    return [y if x is None else (x if y is None else x + y) for x, y in zip(a, b)]


@dataclass
class StudentStep:
    """What one student step leaves for the meta step.

    `grads` drive the real student step. `jvp` keeps θ before the step, its look-ahead (η), the batch `x` of the
    student's forward, the targets q (rows that depend on α) and their mean's N; `unrolled` computes the
    meta-gradient with the step (`meta_grads`, `meta_loss`). `inputs` is what a method needs to rebuild q.
    """

    loss: Tensor
    grads: Grads
    theta: ParamDict | None = None
    lookahead: Lookahead | None = None
    x: Any = None
    targets: Tensor | None = None
    denom: int = 0
    meta_grads: Grads | None = None
    meta_loss: Tensor | None = None
    inputs: tuple[Any, ...] = field(default_factory=tuple)


class MetaGradient(NamedTuple):
    """A meta-gradient (one entry per meta-parameter, None = zero) and the clean loss at θ'."""

    grads: Grads
    clean_loss: Tensor


Rebuild = Callable[[StudentStep], AbstractContextManager[Tensor]]


class SoftTargetHypergrad:
    """dL_clean(θ'(α))/dα for a student trained on soft targets q(α); see the module docstring."""

    name: ClassVar[str]
    max_k: ClassVar[int | None] = None  # longest k-step cycle supported (None: any)

    def student_step(
        self, student: nn.Module, lookahead: Lookahead, logits: Tensor, targets: Tensor, meta_params: Sequence[Tensor],
        clean: Batch, x: Any, n_targets: int, inputs: tuple[Any, ...] = (),
    ) -> StudentStep:  # fmt: skip
        raise NotImplementedError

    def meta_gradient(
        self, student: nn.Module, steps: Sequence[StudentStep], meta_params: Sequence[Tensor], clean: Batch,
        reduction: str = "mean", rebuild: Rebuild | None = None,
    ) -> MetaGradient:  # fmt: skip
        raise NotImplementedError


class JVPSoftTargets(SoftTargetHypergrad):
    """Σ_j c_j·Σ_i⟨sg u_ji, q_ji⟩ / N, u_j = J_{log S(x_j; θ_j)}·g_w (EMLC Eq. 11; exact for k = 1); N per `kstep_denominators`."""

    name = "jvp"

    def student_step(self, student, lookahead, logits, targets, meta_params, clean, x, n_targets, inputs=()):  # noqa: ANN001
        named = named_params(student)
        loss = student_loss(logits, targets.detach(), n_targets)
        grads = list(torch.autograd.grad(loss, list(named.values())))
        return StudentStep(loss.detach(), grads, snapshot_params(named), lookahead, x,
                           targets[:n_targets], n_targets, inputs=inputs)  # fmt: skip

    def meta_gradient(self, student, steps, meta_params, clean, reduction="mean", rebuild=None):  # noqa: ANN001
        loss_c, g_w = clean_grad(student, named_params(student), None, *clean)
        g_w = all_reduce_mean_dict(g_w)
        sur, us = kstep_surrogate(
            student, [s.theta for s in steps], None, [s.x for s in steps], [s.targets for s in steps], g_w,
            [s.lookahead for s in steps], reduction, [s.denom for s in steps],
        )  # fmt: skip
        if all(s.targets.requires_grad for s in steps) or rebuild is None:
            return MetaGradient(list(torch.autograd.grad(sur, meta_params, allow_unused=True)), loss_c)
        grads: Grads = [None] * len(meta_params)
        ns = kstep_denominators([len(s.targets) for s in steps], [s.denom for s in steps], reduction)
        kept_first = sorted(zip(steps, us, ns), key=lambda sun: not sun[0].targets.requires_grad)
        for step, u, n in kept_first:
            with _targets(step, rebuild) as q:  # kept graphs first, then one rebuilt graph at a time
                g = torch.autograd.grad(soft_target_surrogate(u, q, n), meta_params, allow_unused=True)
            grads = add_grads(grads, g)
        return MetaGradient(grads, loss_c)


def _targets(step: StudentStep, rebuild: Rebuild) -> AbstractContextManager[Tensor]:
    assert step.targets is not None
    return nullcontext(step.targets) if step.targets.requires_grad else rebuild(step)


class UnrolledSoftTargets(SoftTargetHypergrad):
    """The exact second-order meta-gradient through the optimizer's own differentiable step (MLC's original)."""

    name = "unrolled"
    max_k = 1

    def student_step(self, student, lookahead, logits, targets, meta_params, clean, x, n_targets, inputs=()):  # noqa: ANN001
        if not lookahead.differentiable:
            raise ConfigError(
                "model.hypergrad = 'unrolled' needs an SGD student optimizer; use hypergrad: jvp"
            )
        named = named_params(student)
        loss = student_loss(logits, targets, n_targets)
        meta, clean_loss, grads = unrolled_metagrad(
            loss, named, meta_params, student, None, *clean, lookahead
        )
        return StudentStep(loss.detach(), list(grads.values()), meta_grads=meta, meta_loss=clean_loss)

    def meta_gradient(self, student, steps, meta_params, clean, reduction="mean", rebuild=None):  # noqa: ANN001
        (step,) = steps
        assert step.meta_grads is not None and step.meta_loss is not None
        return MetaGradient(step.meta_grads, step.meta_loss)


class WeightHypergrad:
    """dL_clean(θ'(c(α)))/dα for a virtual step on Σ_i c_i(α) ℓ_i (MW-Net, L2RW); see the module docstring."""

    name: ClassVar[str]

    def meta_gradient(
        self, student: nn.Module, lookahead: Lookahead, losses: Tensor, coefficients: Tensor,
        meta_params: Sequence[Tensor], batch: Batch, clean: Batch, zero_inner: bool = False,
    ) -> MetaGradient:  # fmt: skip
        """`losses` = ℓ_i(θ) on `batch` from the live parameters; `zero_inner`: Σ c_i ℓ_i has zero gradient (ε = 0)."""
        raise NotImplementedError


class JVPWeights(WeightHypergrad):
    """∇_α of −Σ_i sg(s_i)·c_i(α), s_i = ⟨∇ℓ_i(θ), η ⊙ g_w⟩ from one forward-mode JVP at θ."""

    name = "jvp"

    def meta_gradient(
        self, student, lookahead, losses, coefficients, meta_params, batch, clean, zero_inner=False
    ):  # noqa: ANN001
        named = named_params(student)
        if zero_inner:
            g_v = {k: torch.zeros_like(p) for k, p in named.items()}
        else:
            inner = weighted_loss(losses, coefficients.detach())
            g_v = dict(zip(named, torch.autograd.grad(inner, list(named.values()), retain_graph=True)))
        theta_v = lookahead.step_value(named, all_reduce_mean_dict(g_v))
        loss_c, g_w = clean_grad(student, theta_v, None, *clean)
        s = weight_sensitivities(student, named, None, *batch, all_reduce_mean_dict(g_w), lookahead)
        sur = weight_surrogate(s, coefficients, 1.0)
        return MetaGradient(list(torch.autograd.grad(sur, meta_params, allow_unused=True)), loss_c)


class UnrolledWeights(WeightHypergrad):
    """Through the differentiable virtual step with create_graph (the official MW-Net / L2RW codes)."""

    name = "unrolled"

    def meta_gradient(
        self, student, lookahead, losses, coefficients, meta_params, batch, clean, zero_inner=False
    ):  # noqa: ANN001
        inner = weighted_loss(losses, coefficients)  # Σ_i c_i(α) ℓ_i(θ), differentiated through the step
        grads, loss_c, _ = unrolled_metagrad(
            inner, named_params(student), meta_params, student, None, *clean, lookahead
        )
        return MetaGradient(list(grads), loss_c)


SOFT_TARGETS: dict[str, type[SoftTargetHypergrad]] = {
    c.name: c for c in (JVPSoftTargets, UnrolledSoftTargets)
}
WEIGHTS: dict[str, type[WeightHypergrad]] = {c.name: c for c in (JVPWeights, UnrolledWeights)}


def create_hypergrad(name: str, family: Mapping[str, type]) -> Any:
    """The estimator called `name` in `family` (SOFT_TARGETS or WEIGHTS); a one-line ConfigError otherwise."""
    one_of("model.hypergrad", name, family)
    return family[name]()
