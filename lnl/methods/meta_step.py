"""What the soft-target meta-learners (EMLC, MLC) share: the student's soft-target step, the jvp|unrolled
meta-gradient (DESIGN 4.2-4.3) and gradient averaging. All maths lives in `lnl.hypergrad`."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lnl.errors import ConfigError
from lnl.hypergrad import (
    all_reduce_grads,
    all_reduce_mean_dict,
    clean_grad,
    effective_lrs,
    kstep_surrogate,
    named_params,
    sgd_step_fn,
    snapshot_params,
    unrolled_metagrad,
)
from lnl.losses import soft_cross_entropy


def check_choice(name: str, value: Any, allowed: tuple) -> None:
    """Raise a one-line ConfigError unless `model.<name>` is one of `allowed`."""
    if value not in allowed:
        raise ConfigError(f"model.{name} = {value!r}: allowed values are {', '.join(map(str, allowed))}")


def add_grads(a: list[Tensor | None], b: list[Tensor | None]) -> list[Tensor | None]:
    """Elementwise sum of two gradient lists from `autograd.grad(..., allow_unused=True)` (None = zero)."""
    return [y if x is None else (x if y is None else x + y) for x, y in zip(a, b)]


class MetaStepMixin:
    """Shared steps of soft-target meta-learners (EMLC, MLC) on an `LNLModule` with `self.student`."""

    def setup(self, stage: str) -> None:
        super().setup(stage)
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1 and self.hparams.hypergrad == "unrolled":
            rank_zero_warn(
                "hypergrad: unrolled differentiates each rank's own virtual step (not the all-reduced one), so "
                "its meta-gradient under DDP differs from the single-process value; hypergrad: jvp is exact"
            )

    def _apply_grads(self, opt: Any, params: list[Tensor], grads: Any, term: str) -> bool:
        """Write grads, average them across ranks, check finiteness, clip and step `opt` (False if skipped)."""
        for p, g in zip(params, grads):
            p.grad = torch.zeros_like(p) if g is None else g.detach()
        all_reduce_grads(params)
        norm = torch.stack(torch._foreach_norm([p.grad for p in params])).sum()
        if not self.check_finite(term, norm):
            opt.zero_grad(set_to_none=True)
            return False
        self.optimizer_step_manual(opt)
        return True

    def _soft_target_step(
        self,
        opt: Any,
        logits: Tensor,
        targets: Tensor,
        meta_params: list[Tensor],
        clean: tuple[Tensor, Tensor],
    ) -> dict[str, Any] | None:
        """One real student step on softCE(logits, targets); with `unrolled`, also the exact meta-gradient.

        jvp: returns the pre-step snapshot θ and η for the surrogate (targets are detached here). unrolled:
        differentiates the clean loss through the optimizer's step with create_graph (MLC's virtual step, equal to
        the real one) and reuses its inner gradient for the real step.
        """
        named = named_params(self.student)
        torch_opt = getattr(opt, "optimizer", opt)
        if self.hparams.hypergrad == "unrolled":
            loss = soft_cross_entropy(logits, targets)
            if not self.check_finite("student loss", loss):
                return None
            if not isinstance(torch_opt, torch.optim.SGD):
                raise ConfigError(
                    f"model.hypergrad = 'unrolled' needs an SGD student optimizer, got {type(torch_opt).__name__}"
                )
            meta, clean_loss, grads = unrolled_metagrad(
                loss, named, meta_params, self.student, None, *clean, sgd_step_fn(torch_opt, named)
            )
            ok = self._apply_grads(opt, list(named.values()), grads.values(), "student gradient")
            return {"loss": loss.detach(), "meta_grads": meta, "meta_loss": clean_loss} if ok else None
        loss = soft_cross_entropy(logits, targets.detach())
        if not self.check_finite("student loss", loss):
            return None
        theta, eta = snapshot_params(named), effective_lrs(torch_opt, named)
        grads = torch.autograd.grad(loss, list(named.values()))
        ok = self._apply_grads(opt, list(named.values()), grads, "student gradient")
        return {"loss": loss.detach(), "theta": theta, "eta": eta} if ok else None

    def _jvp_meta(
        self, pending: list[dict], clean: tuple[Tensor, Tensor], reduction: str
    ) -> tuple[Tensor, list[Tensor], Tensor]:
        """(surrogate, per-step scaled u_j, clean loss at θ'): g_w at the current params (all-reduced), JVPs at the
        stored snapshots."""
        loss_c, g_w = clean_grad(self.student, named_params(self.student), None, *clean)
        g_w = all_reduce_mean_dict(g_w)
        sur, us = kstep_surrogate(
            self.student, [p["theta"] for p in pending], None, [p["x"] for p in pending],
            [p["q"] for p in pending], g_w, [p["eta"] for p in pending], reduction,
            [p["denom"] for p in pending],
        )  # fmt: skip
        return sur, us, self.all_reduce_mean(loss_c)
