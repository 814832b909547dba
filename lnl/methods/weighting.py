"""`SampleWeighting`: the base of the clean-set meta-reweighting methods (MW-Net, L2RW).

Both compute per-sample losses ℓ_i on the noisy batch, a meta-gradient of the clean loss after a virtual step on
Σ_i c_i ℓ_i (`lnl.hypergrad.estimators`, `hypergrad: jvp | unrolled`), and take the real student step on the
re-weighted loss; they differ in where the weights come from.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lnl.data.batch import Stream
from lnl.errors import ConfigError
from lnl.hypergrad import WEIGHTS, create_hypergrad
from lnl.hypergrad.weights import weighted_loss
from lnl.methods.base import has_true_labels
from lnl.methods.bilevel import BilevelModule, check_choice
from lnl.numerics import wide


class SampleWeighting(BilevelModule):
    """A student whose noisy loss is re-weighted per sample by a meta-gradient through a virtual step.

    `virtual_step: sgd` is the official codes' θ − lr·∇ at the student's current lr; `optimizer` is the student's
    own next SGD step (momentum, weight decay, Nesterov).
    """

    needs_clean: ClassVar[bool] = True
    epoch_means: ClassVar[tuple[str, ...]] = ("train/weight_right_label", "train/weight_wrong_label")
    bench_variants: ClassVar[dict[str, dict]] = {n: {"hypergrad": n} for n in WEIGHTS}

    def __init__(
        self,
        num_classes: int,
        hypergrad: Literal["jvp", "unrolled"] = "unrolled",
        virtual_step: Literal["sgd", "optimizer"] = "sgd",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        self.hypergrad = create_hypergrad(hypergrad, WEIGHTS)
        check_choice("virtual_step", virtual_step, ("sgd", "optimizer"))

    def on_train_start(self) -> None:
        """`virtual_step: optimizer` mirrors the student's own SGD step: refuse any other student optimizer."""
        opts = self.optimizers()
        opt = getattr(opts[0] if isinstance(opts, list) else opts, "optimizer", None)
        if self.hparams.virtual_step == "optimizer" and not isinstance(opt, torch.optim.SGD):
            raise ConfigError(
                f"model.virtual_step = 'optimizer' needs an SGD student optimizer, got {type(opt).__name__}; "
                "use virtual_step: sgd"
            )

    def noisy_losses(self, x: Any, y: Tensor) -> Tensor | None:
        """ℓ_i = CE(S(x_i), ỹ_i) in float32 or wider (None when non-finite and `on_nonfinite: skip`)."""
        losses = F.cross_entropy(wide(self.student(x)), y, reduction="none")
        return losses if self.check_finite("student loss", losses.sum()) else None

    def weighted_step(
        self, opt: Any, losses: Tensor, coefficients: Tensor, meta_loss: Tensor
    ) -> Tensor | None:
        """The real student step on Σ_i c_i ℓ_i (the forward of `noisy_losses` reused); returns the loss."""
        params = list(self.student.parameters())
        loss = weighted_loss(losses, coefficients)
        if not self.apply_grads(opt, params, torch.autograd.grad(loss, params), "student gradient"):
            return None
        logs = {"train/loss_student": loss.detach(), "train/meta_loss": self.all_reduce_mean(meta_loss)}
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=losses.shape[0])
        return loss

    def log_weights(self, w: Tensor, nb: Stream) -> None:
        """Per-epoch mean weight of the samples whose given label is right / wrong (needs y_true)."""
        if has_true_labels(nb):
            known, right = nb.y_true >= 0, nb.y == nb.y_true
            self.log_masked_mean("train/weight_right_label", w, known & right)
            self.log_masked_mean("train/weight_wrong_label", w, known & ~right)
