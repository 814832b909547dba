"""MW-Net: Meta-Weight-Net (Shu et al., NeurIPS 2019, arXiv:1902.07379), a clean-set meta-reweighting baseline.

A weighting net V maps each noisy sample's loss to a weight; V is meta-learned through a one-step look-ahead of the
student on the clean batch. The maths lives in `lnl.hypergrad.weights`, V in `lnl.models.teachers`.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lnl.data.batch import Batch
from lnl.errors import ConfigError
from lnl.hypergrad.weights import weight_coefficients
from lnl.methods.weighting import SampleWeighting
from lnl.models.teachers import WeightNet


def _adam_1e3(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3, weight_decay=1e-4)  # MW-Net.py: optimizer_vnet


class MWNet(SampleWeighting):
    """Student S and weighting net V(ℓ; α) (1 → 100 → ReLU → 1 → sigmoid); per batch, in the order of the official
    `MW-Net.py` `train` (the paper's Alg. 1):

    1. ℓ_i = CE(S(x_i; θ), ỹ_i), w_i = V(sg ℓ_i; α), c = w/n (`normalize: true`: w/Σw, as the official WRN-28-10
       script), virtual step θ'(α) = step(θ, ∇_θ Σ c_i ℓ_i) (Eq. 3);
    2. one step of V on the clean loss CE(S(x_c; θ'(α))) (Eq. 4): `unrolled` differentiates through the virtual
       step with create_graph; `jvp` takes ∇_α of −Σ_i sg(s_i)·c_i(α), s_i = ⟨∇ℓ_i(θ), η ⊙ ∇CE(θ')⟩ from one
       forward-mode JVP (the same value, tested);
    3. the real student step on Σ c_i ℓ_i with c from the *updated* V, no gradient through V (Eq. 5).

    `virtual_step: sgd` is the official θ − lr·∇ at the student's current lr; `optimizer` is the student's own next
    SGD step (momentum, weight decay, Nesterov). Decisions: one student forward serves the virtual and the real
    step (the official code repeats it: the same values in train-mode BN, one BN statistics update); under DDP
    the `jvp` virtual gradient and g_w are averaged over ranks, and `normalize` divides by each rank's own sum.
    """

    def __init__(
        self,
        num_classes: int,
        meta_optimizer: OptimizerCallable = _adam_1e3,
        meta_scheduler: LRSchedulerCallable | None = None,
        normalize: bool = False,
        hidden: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, meta_optimizer=meta_optimizer, meta_scheduler=meta_scheduler, **kwargs)
        if hidden < 1:
            raise ConfigError(f"model.hidden = {hidden}: must be positive")
        self.vnet = WeightNet(hidden)

    def meta_module(self) -> nn.Module:
        return self.vnet

    def train_step(self, batch: Batch, batch_idx: int) -> None:
        hp, nb, cb = self.hparams, batch.noisy, batch.clean
        s_opt, v_opt = self.optimizers()
        x, y, v_params = nb.x, nb.y, list(self.vnet.parameters())
        losses = self.noisy_losses(x, y)
        if losses is None:
            return
        c = weight_coefficients(self.vnet(losses), hp.normalize)
        meta = self.hypergrad.meta_gradient(
            self.student, self.lookahead(s_opt, hp.virtual_step), losses, c, v_params, (x, y), (cb.x, cb.y)
        )
        self.apply_grads(v_opt, v_params, meta.grads, "weight-net meta-gradient")
        with torch.no_grad():
            w = self.vnet(losses)  # the updated V
        if (
            self.weighted_step(s_opt, losses, weight_coefficients(w, hp.normalize), meta.clean_loss)
            is not None
        ):
            self.log("train/weight_mean", w.mean(), on_step=True, on_epoch=False, batch_size=y.shape[0])
            self.log_weights(w, nb)
