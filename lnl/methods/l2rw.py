"""L2RW: Learning to Reweight Examples (Ren et al., ICML 2018, arXiv:1803.09050), a clean-set meta-reweighting
baseline without meta-parameters: each noisy sample's weight is the rectified, normalized negative meta-gradient
of the clean loss w.r.t. a zero weight on it. The maths lives in `lnl.hypergrad.weights`.
"""

from __future__ import annotations

import torch

from lnl.data.batch import Batch
from lnl.hypergrad.weights import l2rw_weights
from lnl.methods.weighting import SampleWeighting


class L2RW(SampleWeighting):
    """Student S only; per batch, as the paper's Alg. 1 and the official `models/reweight_model.py`:

    1. ℓ_i = CE(S(x_i; θ), ỹ_i), virtual step θ'(ε) = step(θ, ∇_θ Σ_i ε_i ℓ_i/n) at ε = 0 (lines 2-6);
    2. the ε-gradient of the clean loss CE(S(x_c; θ'(ε))) at ε = 0 (lines 7-9): `unrolled` differentiates through
       the step with create_graph; `jvp` takes −s_i/n, s_i = ⟨∇ℓ_i(θ), η ⊙ ∇CE(θ')⟩ from one forward-mode JVP (the
       same value, tested);
    3. w = max(−∂/∂ε, 0) normalized to sum 1 (0 if every entry is 0; lines 10-11), then the real student step on
       Σ_i w_i ℓ_i (lines 12-14), the forward of step 1 reused (the same values in train-mode BN).

    `virtual_step: sgd` (the official code) gives θ'(0) = θ, so g_w is the clean gradient at θ; `optimizer` moves
    θ'(0) by the student's momentum buffer and weight decay. Decisions: the clean objective is the mean CE (the
    official clean pass also adds the L2 weight-decay term); under DDP (`jvp`) g_w is averaged over ranks and w is
    divided by the mean over ranks of each rank's sum, so the averaged step is the global batch's.
    """

    def train_step(self, batch: Batch, batch_idx: int) -> None:
        hp, nb, cb = self.hparams, batch.noisy, batch.clean
        opt = self.optimizers()
        x, y = nb.x, nb.y
        losses = self.noisy_losses(x, y)
        if losses is None:
            return
        eps = torch.zeros_like(losses, requires_grad=True)  # ε = 0: Σ ε_i ℓ_i has zero gradient in θ
        meta = self.hypergrad.meta_gradient(
            self.student, self.lookahead(opt, hp.virtual_step), losses, eps / y.shape[0], [eps], (x, y),
            (cb.x, cb.y), zero_inner=True,
        )  # fmt: skip
        eps_grad = meta.grads[0]
        w = l2rw_weights(eps_grad, self.all_reduce_mean(torch.clamp(-eps_grad.detach(), min=0).sum()))
        if self.weighted_step(opt, losses, w, meta.clean_loss) is not None:
            self.log("train/weight_positive", (w > 0).float().mean(), on_step=True, on_epoch=False,
                     batch_size=y.shape[0])  # fmt: skip
            self.log_weights(y.shape[0] * w, nb)  # n·w: 1 for uniform weights
