"""MLC: Meta Label Correction (Zheng, Awadallah & Dumais, AAAI 2021, arXiv:1911.03809), EMLC's baseline.

The meta-net reads the student's detached penultimate features and the noisy label; its meta-gradient is the
one-step look-ahead gradient of the clean loss, computed either faithfully through a differentiable virtual step
(`hypergrad: unrolled`, second order) or with the JVP engine (`hypergrad: jvp`, same value, tested).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lnl.data.batch import Batch
from lnl.errors import ConfigError
from lnl.hypergrad import SOFT_TARGETS, StudentStep, create_hypergrad
from lnl.methods.base import has_true_labels
from lnl.methods.bilevel import BilevelModule
from lnl.models.backbones import features_and_logits
from lnl.models.teachers import MetaLabelNet
from lnl.report.evidence import LabelEvidence, corrected_target_evidence


def _adam_3e4(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=3e-4)


class MLC(BilevelModule):
    """Student S and meta-net q(sg h_S(x), ỹ); per batch one real student step and one meta step.

    Order (as the original): S(x) and h → q → student loss softCE(S(x), q) (+ CE on half the clean batch with
    `mix_gold`, the other half being the meta batch) → `unrolled`: ∇_θ with create_graph, θ'(α) = the optimizer's
    own SGD step (momentum, weight decay; MLC's `update_params`), CE(S(x_m; θ'(α))) differentiated w.r.t. α, then
    the real step with the same gradient; `jvp`: real step, g_w at θ', meta loss mean⟨sg u, q⟩ with
    u = J_{log S(x; θ)}·(η g_w). Both give dL/dα exactly for an SGD student; one meta-optimizer step.

    Decisions: MLC's discounted multi-step accumulation is not reproduced (one step, k = 1); the meta-net's
    first-layer input is the student's features at θ before the step; `init_checkpoint` initializes the student.
    """

    needs_clean: ClassVar[bool] = True
    epoch_means: ClassVar[tuple[str, ...]] = ("train/label_recovery",)
    bench_variants: ClassVar[dict[str, dict]] = {n: {"hypergrad": n} for n in SOFT_TARGETS}

    def __init__(
        self,
        num_classes: int,
        meta_optimizer: OptimizerCallable = _adam_3e4,
        meta_scheduler: LRSchedulerCallable | None = None,
        hypergrad: Literal["jvp", "unrolled"] = "unrolled",
        skip: bool = False,
        mix_gold: bool = False,
        embed_dim: int = 128,
        hidden: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, meta_optimizer, meta_scheduler, **kwargs)
        self.hypergrad = create_hypergrad(hypergrad, SOFT_TARGETS)
        if embed_dim < 1 or hidden < 1:
            raise ConfigError(f"model.embed_dim/hidden = {embed_dim}/{hidden}: must be positive")
        self.meta_net = MetaLabelNet(int(self.student.num_features), num_classes, embed_dim, hidden, skip)

    def meta_module(self) -> nn.Module:
        return self.meta_net

    def train_step(self, batch: Batch, batch_idx: int) -> None:
        nb, cb = batch.noisy, batch.clean
        s_opt, m_opt = self.optimizers()
        y = nb.y
        split = self.mix_gold(nb.x, (cb.x, cb.y))
        feats, logits = features_and_logits(self.student, split.x_student)
        q = self.meta_net(feats[: y.shape[0]], y)
        targets = q if split.gold is None else torch.cat([q, split.gold.to(q.dtype)])
        m_params, s_params = list(self.meta_net.parameters()), list(self.student.parameters())
        step: StudentStep = self.hypergrad.student_step(
            self.student,
            self.lookahead(s_opt),
            logits,
            targets,
            m_params,
            split.meta,
            split.x_student,
            len(q),
        )
        if not self.check_finite("student loss", step.loss):
            return
        if not self.apply_grads(s_opt, s_params, step.grads, "student gradient"):
            return
        meta = self.hypergrad.meta_gradient(self.student, [step], m_params, split.meta)
        self.apply_grads(m_opt, m_params, meta.grads, "meta-net meta-gradient")
        logs = {"train/loss_student": step.loss, "train/meta_loss": self.all_reduce_mean(meta.clean_loss)}
        if has_true_labels(nb):
            y_true = nb.y_true
            self.log_masked_mean("train/label_recovery", q.detach().argmax(1) == y_true, y_true >= 0)
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=y.shape[0])

    def label_evidence(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> LabelEvidence:
        """Issue score 1 − q(ỹ) of the meta-net's corrected target q; column: its label."""
        feats, logits = features_and_logits(self.student, x)
        q = self.meta_net(feats, y)
        return corrected_target_evidence(logits, q, y, {"meta_label": q.argmax(1)})
