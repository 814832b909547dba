"""EMLC: Enhanced Meta Label Correction (Keren Taraday & Baskin, ICCV 2023, arXiv:2305.12961; Eqs. 10-12).

The meta-gradient estimators live in `lnl.hypergrad.estimators`, the teacher in `lnl.models.teachers`, and what
every meta-learner shares (optimizers, the `mix_gold` split, the step primitive) in `bilevel.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from lnl.data.batch import Batch
from lnl.errors import ConfigError
from lnl.hypergrad import SOFT_TARGETS, StudentStep, create_hypergrad, frozen_buffers
from lnl.hypergrad.estimators import add_grads
from lnl.methods.bilevel import TeacherStudent, check_choice
from lnl.methods.diagnostics import log_label_correction
from lnl.models.teachers import LabelCorrector
from lnl.report.evidence import LabelEvidence, corrected_target_evidence


class EMLC(TeacherStudent):
    """EMLC: student S, label-correcting teacher (own backbone + 128-d label embedding + gate), meta-learned.

    Per batch: teacher CE (+ BCE on corrupted clean labels) gradients on the clean batch (AutoAugment), then
    q = teacher(x, ỹ), a real SGD step of S on softCE(S(x), sg q) (+ gold half when `mix_gold`),
    snapshot θ kept. Every k-th batch (and at the epoch's last batch): g_w = ∇CE(S(x_m; θ')) on the meta batch
    (the clean batch, or its second half with `mix_gold`), all-reduced; teacher loss = Σ_j c_j·Σ_i⟨sg u_ji, q_ji⟩ / N
    + CE + BCE (Eq. 12), N = the rows of all k steps (`kstep_reduction: mean`, the official `teacher_backward_ms`), u_j = JVP of log S at θ_j on batch j along g_w (`hypergrad: jvp`), or the exact
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
        kstep_reduction: Literal["sum", "mean"] = "mean",
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
        """Gradients of the teacher's supervised loss on the clean batch (CE, + the gate's BCE with corruption)."""
        g = self.step_generator(y.device)  # step-seeded; only `random` corruption draws from it
        loss, logs = self.teacher.supervised_loss(x, y, self.hparams.corruption, g)
        return list(torch.autograd.grad(loss, list(self.teacher.parameters()), allow_unused=True)), logs

    def train_step(self, batch: Batch, batch_idx: int) -> None:
        hp, nb, cb = self.hparams, batch.noisy, batch.clean
        s_opt, t_opt = self.optimizers()
        x, y, xc, yc = nb.x, nb.y, cb.x, cb.y
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
            self.student, self.lookahead(s_opt), self.student(split.x_student), targets, t_params,
            split.meta, split.x_student, len(q), inputs=(x, y),
        )  # fmt: skip
        if not self.check_finite("student loss", step.loss):
            return
        if not self.apply_grads(s_opt, list(self.student.parameters()), step.grads, "student gradient"):
            return
        log_label_correction(self, q, a, nb)
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
        q, a = self.teacher.correct(*self.teacher.features_and_logits(x), y)
        columns = {"teacher_label": q.argmax(1), "gate_weight": torch.sigmoid(a.float())}
        return corrected_target_evidence(self.student(x), q, y, columns)
