"""`BilevelModule`: the base of every meta-learner (DML, EMLC, MLC, MW-Net, L2RW).

It owns what they share: the meta-network's two optimizers and schedulers, the teacher backbone's construction,
the `mix_gold` split of the clean batch (EMLC/MLC official `meta.py`), the one step primitive (write gradients →
average across ranks → finite check → clip → step → zero) and the student's look-ahead (`Lookahead`). A method file keeps its losses and the order of its steps.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lnl.hypergrad import Lookahead, named_params
from lnl.hypergrad.distributed import all_reduce_grads
from lnl.hypergrad.lookahead import Rule
from lnl.methods.base import LNLModule
from lnl.validation import one_of


def check_choice(name: str, value: Any, allowed: tuple) -> None:
    """Raise a one-line ConfigError unless `model.<name>` is one of `allowed`."""
    one_of(f"model.{name}", value, allowed)


class GoldSplit(NamedTuple):
    """`mix_gold`: the student's input (noisy batch + gold half), the gold half's one-hot targets, the meta batch."""

    x_student: Any
    gold: Tensor | None
    meta: tuple[Any, Tensor]


class BilevelModule(LNLModule):
    """A student plus an optional meta-network trained by hand (manual optimization) with one step primitive."""

    def __init__(
        self,
        num_classes: int,
        meta_optimizer: OptimizerCallable | None = None,
        meta_scheduler: LRSchedulerCallable | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        self.automatic_optimization = False
        self.meta_optimizer_factory, self.meta_scheduler_factory = meta_optimizer, meta_scheduler

    # ---------------------------------------------------------------- networks and optimizers
    def meta_module(self) -> nn.Module | None:
        """The network the second optimizer trains (teacher, meta-net, weight net), or None (L2RW)."""
        return None

    def configure_optimizers(self) -> Any:
        meta = self.meta_module()
        if meta is None:
            return super().configure_optimizers()
        return self.two_optimizers(
            meta.parameters(), self.meta_optimizer_factory, self.meta_scheduler_factory
        )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1 and self.hparams.get("hypergrad") == "unrolled":
            rank_zero_warn(
                "hypergrad: unrolled differentiates each rank's own virtual step (not the all-reduced one), so "
                "its meta-gradient under DDP differs from the single-process value; hypergrad: jvp is exact"
            )

    # ---------------------------------------------------------------- diagnostics with per-epoch history
    diagnostics: Any = None  # an object with reset(), log_epoch(module), save_figure(module) and `history`

    def on_train_epoch_start(self) -> None:
        if self.diagnostics is not None:
            self.diagnostics.reset()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.diagnostics is not None:
            self.diagnostics.log_epoch(self)

    def on_fit_end(self) -> None:
        if self.diagnostics is not None:
            self.diagnostics.save_figure(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.diagnostics is not None:
            checkpoint["diagnostics"] = self.diagnostics.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.diagnostics is not None:
            self.diagnostics.history = list(checkpoint.get("diagnostics", []))

    # ---------------------------------------------------------------- the shared pieces of a step
    @staticmethod
    def grads_of(loss: Tensor, params: dict[str, Tensor], retain_graph: bool = False) -> dict[str, Tensor]:
        """∇ loss for each named parameter (zeros where unused)."""
        grads = torch.autograd.grad(loss, list(params.values()), retain_graph=retain_graph, allow_unused=True)
        return {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(params.items(), grads)}

    def mix_gold(self, x: Any, clean: tuple[Any, Tensor]) -> GoldSplit:
        """With `mix_gold` the first half of the clean batch joins the student's batch (one-hot targets) and the
        second half is the meta batch (official EMLC/MLC `meta.py`); otherwise the whole clean batch is meta."""
        if not self.hparams.get("mix_gold", False):
            return GoldSplit(x, None, clean)
        xc, yc = clean
        half = yc.shape[0] // 2
        gold = F.one_hot(yc[:half], self.num_classes)
        return GoldSplit(torch.cat([x, xc[:half]]), gold, (xc[half:], yc[half:]))

    def lookahead(self, opt: Any, rule: Rule = "optimizer") -> Lookahead:
        """The student's next step read from its optimizer `opt` now: `optimizer` = the optimizer's own step,
        `sgd` = a plain SGD step at each group's current lr (`lnl.hypergrad.lookahead`)."""
        return Lookahead.of(opt, named_params(self.student), rule)

    def apply_grads(self, opt: Any, params: list[Tensor], grads: Any, term: str) -> bool:
        """The one step primitive: write grads, average across ranks, check finiteness, clip, step, zero.

        Returns False (nothing stepped) when the gradient is non-finite and `on_nonfinite: skip`.
        """
        for p, g in zip(params, grads):
            p.grad = torch.zeros_like(p) if g is None else g.detach()
        all_reduce_grads(params)
        norm = torch.stack(torch._foreach_norm([p.grad for p in params])).sum()
        if not self.check_finite(term, norm):
            opt.zero_grad(set_to_none=True)
            return False
        self.optimizer_step_manual(opt)
        return True


class TeacherStudent(BilevelModule):
    """A meta-learner whose meta-network is a teacher with its own backbone (DML, EMLC).

    The teacher's backbone has the student's architecture unless `teacher_backbone` names another; its optimizer
    and scheduler are `teacher_optimizer` / `teacher_scheduler`. A method may wrap `self.teacher` (EMLC's label
    corrector) after this constructor.
    """

    def __init__(
        self,
        num_classes: int,
        teacher_backbone: str | None = None,
        teacher_backbone_kwargs: dict[str, Any] | None = None,
        teacher_optimizer: OptimizerCallable = torch.optim.SGD,
        teacher_scheduler: LRSchedulerCallable | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, teacher_optimizer, teacher_scheduler, **kwargs)
        same = teacher_backbone is None
        self.teacher: nn.Module = self.build_backbone(
            self.hparams.backbone if same else teacher_backbone,
            self.hparams.backbone_kwargs if same else teacher_backbone_kwargs,
        )

    def meta_module(self) -> nn.Module:
        return self.teacher
