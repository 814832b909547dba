"""The student's next step as a differentiable function of its gradient: θ' = step(θ, g), slope η = −∂θ'/∂g.

Every bi-level method differentiates the clean loss through one student step (EMLC Eqs. 3-7, MLC's
`update_params`, MW-Net Eq. 3, L2RW Alg. 1 lines 4-6, DML Eq. 4 and 7). A `Lookahead` is that step, read once from
the live optimizer, in the way `higher.get_diff_optim(opt, params)` turns a `torch.optim.SGD` into a differentiable
optimizer: per parameter it keeps the SGD settings and momentum buffer of the next step and its step size η.

For `torch.optim.SGD` with weight decay λ, momentum μ, dampening τ:

    d = g + λθ,   b' = μb + (1 − τ)d  (b' = d on the first step),   θ' = θ − lr·b'  (Nesterov: θ − lr·(d + μb'))

λθ and b do not depend on g, so θ' is affine in g with slope −η per parameter: η = lr(1 − τ) once a buffer exists
(lr on the first step), times (1 + μ(1 − τ)) with Nesterov (first step: 1 + μ). η is one float per parameter name
(`eta`); `scale(v)` = η ⊙ v is the only place η multiplies a tensor.

Rules (`rule`): `optimizer`, the optimizer's own next step (differentiable for SGD only; any other optimizer gets
η = its group lr, a first-order approximation, and no `step`); `sgd`, a plain θ − lr·g at each group's current lr
(the official MW-Net / L2RW virtual step, DML's momentum-free look-ahead).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from lnl.hypergrad.functional import ParamDict

Rule = Literal["optimizer", "sgd"]


@dataclass(frozen=True)
class SGDStep:
    """One parameter's next `torch.optim.SGD` update: its group's settings and its momentum buffer (None: first)."""

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    buffer: Tensor | None = None

    def __call__(self, p: Tensor, g: Tensor) -> Tensor:
        """θ' = θ − lr·d, d with weight decay, momentum and Nesterov as `torch.optim.SGD` (differentiable)."""
        d = g
        if self.weight_decay:
            d = d + self.weight_decay * p
        if self.momentum:
            buf = d if self.buffer is None else self.momentum * self.buffer + (1.0 - self.dampening) * d
            d = d + self.momentum * buf if self.nesterov else buf
        return p - self.lr * d

    @property
    def eta(self) -> float:
        """η = −∂θ'/∂g of this update (see the module docstring)."""
        if not self.momentum:
            return self.lr
        scale = 1.0 if self.buffer is None else 1.0 - self.dampening
        return self.lr * (scale * (1.0 + self.momentum) if self.nesterov else scale)


def _own_step(optimizer: torch.optim.Optimizer, group: Mapping[str, Any], p: Tensor) -> SGDStep | None:
    if not isinstance(optimizer, torch.optim.SGD):
        return None
    buf = optimizer.state.get(p, {}).get("momentum_buffer")
    return SGDStep(float(group["lr"]), float(group.get("momentum", 0.0)), float(group.get("dampening", 0.0)),
                   float(group.get("weight_decay", 0.0)), bool(group.get("nesterov", False)), buf)  # fmt: skip


def _plain_sgd(optimizer: torch.optim.Optimizer, group: Mapping[str, Any], p: Tensor) -> SGDStep:
    return SGDStep(float(group["lr"]))


RULES: dict[str, Callable[[torch.optim.Optimizer, Mapping[str, Any], Tensor], SGDStep | None]] = {
    "optimizer": _own_step,
    "sgd": _plain_sgd,
}


@dataclass(frozen=True)
class Lookahead:
    """The student's next step θ' = step(θ, g) per parameter name, and its step sizes η (see the module docstring).

    `steps` is None when the rule has no differentiable step (the `optimizer` rule of a non-SGD optimizer): `eta`
    then holds each group's lr and `step` raises.
    """

    eta: dict[str, float]
    steps: dict[str, SGDStep] | None = None
    optimizer_name: str = "SGD"

    @classmethod
    def of(cls, optimizer: Any, named: Mapping[str, Tensor], rule: Rule = "optimizer") -> Lookahead:
        """The look-ahead of `optimizer`'s (or a Lightning wrapper's) next step on the parameters `named`."""
        if rule not in RULES:
            raise ValueError(f"rule = {rule!r}: expected 'sgd' or 'optimizer'")
        optimizer = getattr(optimizer, "optimizer", optimizer)
        group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        eta: dict[str, float] = {}
        steps: dict[str, SGDStep] = {}
        for name, p in named.items():
            group = group_of.get(id(p))
            if group is None:
                raise KeyError(f"parameter {name} is not in the optimizer")
            step = RULES[rule](optimizer, group, p)
            eta[name] = float(group["lr"]) if step is None else step.eta
            if step is not None:
                steps[name] = step
        return cls(eta, steps if len(steps) == len(eta) else None, type(optimizer).__name__)

    @classmethod
    def constant(cls, eta: float, names: Iterable[str]) -> Lookahead:
        """A plain SGD step θ' = θ − η·g with one η for every name (the k-step coefficients, tests)."""
        return cls.from_eta({n: float(eta) for n in names})

    @classmethod
    def from_eta(cls, eta: Mapping[str, float]) -> Lookahead:
        """A plain SGD step θ' = θ − η_n·g_n with the given per-name η."""
        return cls(dict(eta), {n: SGDStep(float(e)) for n, e in eta.items()})

    @property
    def differentiable(self) -> bool:
        """Whether `step` exists (always for the `sgd` rule; for `optimizer` only with torch.optim.SGD)."""
        return self.steps is not None

    def step(self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor]) -> ParamDict:
        """θ' for every name of `params` (differentiable in both arguments)."""
        if self.steps is None:
            raise TypeError(
                f"the optimizer's own look-ahead needs torch.optim.SGD, got {self.optimizer_name}"
            )
        return {n: self.steps[n](p, grads[n]) for n, p in params.items()}

    def step_value(self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor]) -> ParamDict:
        """θ' as detached tensors (an estimator that needs its value only)."""
        with torch.no_grad():
            return {
                n: p.detach() for n, p in self.step({n: p.detach() for n, p in params.items()}, grads).items()
            }

    def scale(self, tangent: Mapping[str, Tensor]) -> ParamDict:
        """η ⊙ v per parameter name (v = g_w gives the JVP direction of EMLC Eq. 10 and MW-Net's s_i)."""
        return {n: v * self.eta[n] for n, v in tangent.items()}
