"""EMLC: Enhanced Meta Label Correction (Keren Taraday & Baskin, ICCV 2023, arXiv:2305.12961; Eqs. 10-12).

The meta-gradient estimators live in `lnl.hypergrad.estimators`, the teacher in `lnl.models.teachers`, and what
every meta-learner shares (optimizers, the `mix_gold` split, the step primitive) in `bilevel.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lnl.errors import ConfigError
from lnl.hypergrad import frozen_buffers
from lnl.hypergrad.estimators import SOFT_TARGETS, StudentStep, add_grads, create_hypergrad
from lnl.hypergrad.functional import wide
from lnl.methods.base import has_true_labels
from lnl.methods.bilevel import TeacherStudent, check_choice
from lnl.models.teachers import LabelCorrector
from lnl.report.evidence import LabelEvidence, flagged_correction, loss_based_evidence


class EMLC(TeacherStudent):
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
        self.hypergrad = create_hypergrad(hypergrad, SOFT_TARGETS)
        check_choice("corruption", corruption, ("none", "random", "adversarial"))
        check_choice("kstep_reduction", kstep_reduction, ("sum", "mean"))
        check_choice("kstep_targets", kstep_targets, ("recompute", "keep"))
        max_k = self.hypergrad.max_k
        if k < 1 or (max_k is not None and k > max_k):
            raise ConfigError(f"model.k = {k}: must be >= 1 (and <= {max_k} with hypergrad: {hypergrad})")
        self.teacher = LabelCorrector(self.teacher, num_classes, embed_dim, gate_hidden)
        self._pending: list[StudentStep] = []

    def init_targets(self) -> dict[str, nn.Module]:
        return {"student": self.student, "teacher": self.teacher.backbone}

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
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
        if not self.finite_batch(batch):
            return None  # on_nonfinite: skip, before any forward pass updates BN statistics
        hp, nb, cb = self.hparams, batch["noisy"], batch["clean"]
        s_opt, t_opt = self.optimizers()
        x, y, xc, yc = nb["x"], nb["y"], cb["x"], cb["y"]
        n_batches = self.trainer.num_training_batches
        closes = len(self._pending) + 1 >= hp.k or (n_batches != float("inf") and batch_idx + 1 >= n_batches)
        split = self.mix_gold(x, (xc, yc))
        t_params = list(self.teacher.parameters())
        sup, logs = self._teacher_supervised(xc, yc) if closes else (None, {})

        later = hp.kstep_targets == "recompute" and not closes  # its graph is rebuilt at the meta step
        with torch.no_grad() if later else nullcontext():
            q, a = self.teacher.correct(*self.teacher.features_and_logits(x), y)
        targets = q if split.gold is None else torch.cat([q, split.gold.to(q.dtype)])
        step = self.hypergrad.student_step(
            self.student, *self.lookahead_rule(s_opt), self.student(split.x_student), targets, t_params,
            split.meta, split.x_student, len(q), inputs=(x, y),
        )  # fmt: skip
        if not self.check_finite("student loss", step.loss):
            return
        if not self.apply_grads(s_opt, list(self.student.parameters()), step.grads, "student gradient"):
            return
        self._log_targets(q, a, nb)
        self._pending.append(step)
        logs["train/loss_student"] = step.loss
        if closes:
            meta = self.hypergrad.meta_gradient(
                self.student, self._pending, t_params, split.meta, hp.kstep_reduction, self._rebuilt_targets
            )
            self._pending = []
            self.apply_grads(t_opt, t_params, add_grads(sup, meta.grads), "teacher meta-gradient")
            logs["train/meta_loss"] = self.all_reduce_mean(meta.clean_loss)
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=y.shape[0])

    @contextmanager
    def _rebuilt_targets(self, step: StudentStep) -> Iterator[Tensor]:
        """q of an earlier batch of the k-cycle, rebuilt with BN statistics frozen (restored after the backward)."""
        x, y = step.inputs
        with frozen_buffers(self.teacher):
            yield self.teacher.correct(*self.teacher.features_and_logits(x), y)[0]

    def label_evidence(self, x: Tensor, y: Tensor, index: Tensor) -> LabelEvidence:
        """Issue score 1 − q(ỹ) of the teacher's corrected target q (Fig. 3); columns: its label and gate weight."""
        ev = loss_based_evidence(self.student(x), y)
        q, a = self.teacher.correct(*self.teacher.features_and_logits(x), y)
        score = 1.0 - q.gather(1, y[:, None]).squeeze(1).float()
        columns = ev.columns | {"teacher_label": q.argmax(1), "gate_weight": torch.sigmoid(a.float())}
        return LabelEvidence(ev.probs, score, flagged_correction(score, q.argmax(1), y), columns)

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
