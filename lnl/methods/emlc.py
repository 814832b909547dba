"""EMLC: Enhanced Meta Label Correction (DESIGN 4.2; paper Props. 1-3, Eqs. 10-12).

All meta-gradient maths lives in `lnl.hypergrad`, the teacher in `lnl.models.teachers`, and what EMLC shares with
MLC (the student's soft-target step, the jvp|unrolled meta-gradient, gradient averaging) in `meta_step.py`.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lnl.errors import ConfigError
from lnl.hypergrad import frozen_buffers, soft_target_surrogate
from lnl.hypergrad.functional import wide
from lnl.methods.base import LNLModule, has_true_labels
from lnl.methods.meta_step import MetaStepMixin, add_grads, check_choice
from lnl.models.teachers import LabelCorrector


class EMLC(MetaStepMixin, LNLModule):
    """EMLC: student S, label-correcting teacher (own backbone + 128-d label embedding + gate), meta-learned.

    Per batch: teacher CE (+ BCE on corrupted clean labels) gradients on the clean batch (AutoAugment), then
    q = teacher(x, ỹ), a real SGD step of S on softCE(S(x), sg q) (+ gold half when `mix_gold`),
    snapshot θ kept. Every k-th batch (and at the epoch's last batch): g_w = ∇CE(S(x_m; θ')) on the meta batch
    (the clean batch, or its second half with `mix_gold`), all-reduced; teacher loss = Σ_j c_j·mean⟨sg u_j, q_j⟩
    + CE + BCE (Eq. 12), u_j = JVP of log S at θ_j on batch j along g_w (`hypergrad: jvp`), or the exact
    unrolled second-order gradient (`unrolled`, k = 1). One teacher step.

    Decisions: corruption hits the odd positions of the clean batch (target 1 where the label is still right);
    BCE and CE train the whole teacher; one optimizer for backbone, embedding and gate (same SGD settings as the
    official code's two). The epoch's last batch closes a partial k-cycle, so end-of-epoch checkpoints hold no
    pending state. The teacher's supervised grads are taken first, which keeps peak memory at two activation sets.
    `kstep_targets: recompute` (default) computes the k − 1 earlier batches' q without a graph and rebuilds each at
    the meta step with BN statistics frozen (one teacher graph alive, one more teacher forward per batch, like the
    official code); `keep` holds their k graphs instead (faster, memory grows with k). Both give the same gradient.
    """

    needs_clean: ClassVar[bool] = True
    clean_augment: ClassVar[str] = "autoaugment"
    eval_nets: ClassVar[tuple[str, ...]] = ("student", "teacher")
    epoch_means: ClassVar[tuple[str, ...]] = ("train/label_recovery", "train/wrong_label_recovery",
                                              "train/gate_right_label", "train/gate_wrong_label")  # fmt: skip
    bench_variants: ClassVar[dict[str, dict]] = {
        "k1_jvp": {"k": 1, "hypergrad": "jvp"},
        "k1_unrolled": {"k": 1, "hypergrad": "unrolled"},
        "k5_jvp": {"k": 5, "hypergrad": "jvp"},
        "k5_jvp_keep": {"k": 5, "hypergrad": "jvp", "kstep_targets": "keep"},
    }

    def __init__(
        self,
        num_classes: int,
        teacher_backbone: str | None = None,
        teacher_backbone_kwargs: dict[str, Any] | None = None,
        teacher_optimizer: OptimizerCallable = torch.optim.SGD,
        teacher_scheduler: LRSchedulerCallable | None = None,
        k: int = 1,
        hypergrad: Literal["jvp", "unrolled"] = "jvp",
        corruption: Literal["none", "random", "adversarial"] = "none",
        mix_gold: bool = False,
        kstep_reduction: Literal["sum", "mean"] = "sum",
        kstep_targets: Literal["recompute", "keep"] = "recompute",
        embed_dim: int = 128,
        gate_hidden: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        check_choice("hypergrad", hypergrad, ("jvp", "unrolled"))
        check_choice("corruption", corruption, ("none", "random", "adversarial"))
        check_choice("kstep_reduction", kstep_reduction, ("sum", "mean"))
        check_choice("kstep_targets", kstep_targets, ("recompute", "keep"))
        if k < 1 or (hypergrad == "unrolled" and k != 1):
            raise ConfigError(f"model.k = {k}: must be >= 1 (and 1 with hypergrad: unrolled)")
        self.automatic_optimization = False
        same = teacher_backbone is None
        backbone = self.build_backbone(
            self.hparams.backbone if same else teacher_backbone,
            self.hparams.backbone_kwargs if same else teacher_backbone_kwargs,
        )
        self.teacher = LabelCorrector(backbone, num_classes, embed_dim, gate_hidden)
        self.teacher_optimizer_factory, self.teacher_scheduler_factory = teacher_optimizer, teacher_scheduler
        self._pending: list[dict[str, Any]] = []

    def init_targets(self) -> dict[str, nn.Module]:
        return {"student": self.student, "teacher": self.teacher.backbone}

    def configure_optimizers(self) -> Any:
        return self.two_optimizers(
            self.teacher.parameters(), self.teacher_optimizer_factory, self.teacher_scheduler_factory
        )

    def on_train_epoch_start(self) -> None:
        self._pending = []

    # ---------------------------------------------------------------- the step
    def _teacher_supervised(self, x: Tensor, y: Tensor) -> tuple[list, dict[str, Tensor]]:
        """Gradients of CE(teacher logits, y) + BCE(gate logit, label still correct) on the clean batch."""
        h, logits = self.teacher.features_and_logits(x)
        ce = F.cross_entropy(wide(logits), y)
        logs, loss = {"train/teacher_ce": ce.detach()}, ce
        if self.hparams.corruption != "none":
            corrupt = torch.arange(y.shape[0], device=y.device) % 2 == 1
            if self.hparams.corruption == "random":
                g = self.step_generator(y.device)
                wrong = torch.randint(0, self.num_classes, y.shape, generator=g, device=y.device)
            else:  # adversarial: the teacher's strongest wrong class
                wrong = wide(logits.detach()).scatter(1, y[:, None], float("-inf")).argmax(1)
            y_tilde = torch.where(corrupt, wrong, y)
            a = wide(self.teacher.gate_logit(h, y_tilde))
            bce = F.binary_cross_entropy_with_logits(a, (y_tilde == y).to(a.dtype))
            loss = loss + bce
            w = torch.sigmoid(a.detach())
            logs |= {
                "train/bce": bce.detach(),
                "train/gate_clean": w[~corrupt].mean(),
                "train/gate_corrupted": w[corrupt].mean(),
            }
        grads = torch.autograd.grad(loss, list(self.teacher.parameters()), allow_unused=True)
        return list(grads), logs

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        hp, nb, cb = self.hparams, batch["noisy"], batch["clean"]
        s_opt, t_opt = self.optimizers()
        x, y, xc, yc = nb["x"], nb["y"], cb["x"], cb["y"]
        n_batches = self.trainer.num_training_batches
        closes = len(self._pending) + 1 >= hp.k or (n_batches != float("inf") and batch_idx + 1 >= n_batches)
        meta = (xc, yc)
        x_s, gold = x, None
        if hp.mix_gold:
            half = yc.shape[0] // 2
            gold, meta = F.one_hot(yc[:half], self.num_classes), (xc[half:], yc[half:])
            x_s = torch.cat([x, xc[:half]])
        t_params = list(self.teacher.parameters())
        sup, logs = self._teacher_supervised(xc, yc) if closes else (None, {})

        later = hp.hypergrad == "jvp" and hp.kstep_targets == "recompute" and not closes
        with torch.no_grad() if later else nullcontext():  # its graph is rebuilt at the meta step
            h, t_logits = self.teacher.features_and_logits(x)
            q, a = self.teacher.correct(h, t_logits, y)
        targets = q if gold is None else torch.cat([q, gold.to(q.dtype)])
        out = self._soft_target_step(s_opt, self.student(x_s), targets, t_params, meta)
        if out is None:  # skipped (on_nonfinite: skip)
            return
        self._log_targets(q, a, nb)
        logs["train/loss_student"] = out["loss"]
        if hp.hypergrad == "jvp":
            self._pending.append({"theta": out["theta"], "eta": out["eta"], "x": x_s, "q": q,
                                  "denom": x_s.shape[0], "x_t": x, "y": y})  # fmt: skip
        if closes:
            if hp.hypergrad == "jvp":
                meta_grads, meta_loss = self._teacher_meta_grads(t_params, meta)
            else:
                meta_grads, meta_loss = out["meta_grads"], self.all_reduce_mean(out["meta_loss"])
            self._pending = []
            grads = add_grads(sup, meta_grads)
            self._apply_grads(t_opt, t_params, grads, "teacher meta-gradient")
            logs["train/meta_loss"] = meta_loss
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=y.shape[0])

    def _teacher_meta_grads(self, t_params: list[Tensor], meta: tuple[Tensor, Tensor]) -> tuple[list, Tensor]:
        """∇_α of the k-step surrogate (Eq. 11). Targets stored without a graph (`kstep_targets: recompute`) are
        recomputed one batch at a time with BN statistics frozen, so one teacher graph is alive at a time."""
        sur, us, meta_loss = self._jvp_meta(self._pending, meta, self.hparams.kstep_reduction)
        if all(p["q"].requires_grad for p in self._pending):
            return list(torch.autograd.grad(sur, t_params, allow_unused=True)), meta_loss
        grads: list[Tensor | None] = [None] * len(t_params)
        kept_first = sorted(zip(self._pending, us), key=lambda pu: not pu[0]["q"].requires_grad)
        for p, u in kept_first:  # a kept graph goes before any rebuild touches the BN statistics it saved
            if p["q"].requires_grad:
                g = torch.autograd.grad(
                    soft_target_surrogate(u, p["q"], p["denom"]), t_params, allow_unused=True
                )
            else:
                with frozen_buffers(self.teacher):  # restored after the backward
                    q = self.teacher.correct(*self.teacher.features_and_logits(p["x_t"]), p["y"])[0]
                    g = torch.autograd.grad(
                        soft_target_surrogate(u, q, p["denom"]), t_params, allow_unused=True
                    )
            grads = add_grads(grads, list(g))
        return grads, meta_loss

    def _log_targets(self, q: Tensor, a: Tensor, nb: dict[str, Any]) -> None:
        """Gate means (overall, on right / wrong noisy labels) and per-epoch label recovery (needs y_true)."""
        w = torch.sigmoid(a.detach().float())
        self.log("train/gate_noisy", w.mean(), on_step=True, on_epoch=False, batch_size=w.shape[0])
        y, y_true = nb["y"], nb.get("y_true")
        if not has_true_labels(nb):
            return
        known = y_true >= 0
        right, wrong = known & (y == y_true), known & (y != y_true)
        hit = (q.detach().argmax(1) == y_true).float()
        epoch = {"train/label_recovery": (hit, known), "train/wrong_label_recovery": (hit, wrong),
                 "train/gate_right_label": (w, right), "train/gate_wrong_label": (w, wrong)}  # fmt: skip
        for name, (v, m) in epoch.items():
            self.log_masked_mean(name, v, m)
