"""SimCLR: label-agnostic contrastive pretraining of the student backbone, the `init_checkpoint` of EMLC/MLC/CE.

The EMLC paper initializes both of its networks from SimCLR (Chen et al. 2020) weights (EMLC §4.1); the official
code expects them from an external repository. This method produces them on any of our data sources with the same
data module: `lnl fit --config configs/simclr_digits.yaml`, then any method with `init_checkpoint` set to its
`last.ckpt` (nothing downloaded).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lnl.data.batch import Batch
from lnl.errors import ConfigError
from lnl.losses import accuracy, nt_xent
from lnl.methods.base import LNLModule


class SimCLR(LNLModule):
    """Two strong views of every training image, features → projection MLP → NT-Xent (SimCLR Eq. 1).

    The images' labels never reach the backbone: the student's classifier is an online linear probe trained on
    detached features with the given (noisy) labels, so `val/acc` tracks representation quality without shaping it.
    Load the run's `last.ckpt` with `model.init_args.init_checkpoint` (backbone only; the probe is not loaded).

    Args:
        proj_dim: output size of the projection head (hidden size = feature size).
        temperature: NT-Xent temperature τ.
        **kwargs: everything `LNLModule` takes (num_classes, backbone, optimizer, scheduler, ...).

    Decision: under DDP, negatives are the other samples of the rank's own batch (no all-gather).
    """

    train_views: ClassVar[tuple[str, ...]] = ("strong", "strong")

    def __init__(self, num_classes: int, proj_dim: int = 64, temperature: float = 0.5, **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        if temperature <= 0 or proj_dim < 1:
            raise ConfigError(
                f"model.temperature = {temperature}, model.proj_dim = {proj_dim}: both must be positive"
            )
        d = int(self.student.num_features)
        self.projector = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, proj_dim))

    def student_parameters(self) -> list[nn.Parameter]:
        return [*self.student.parameters(), *self.projector.parameters()]

    def train_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        noisy = batch.noisy
        x1, x2, y = noisy.views.strong, noisy.views.strong2, noisy.y
        n = y.shape[0]
        h = self.student.forward_head(self.student.forward_features(torch.cat([x1, x2])), pre_logits=True)
        z = self.projector(h)
        contrastive = nt_xent(z[:n], z[n:], self.hparams.temperature)
        probe_logits = self.student.get_classifier()(h[:n].detach())
        probe = F.cross_entropy(probe_logits, y)
        loss = contrastive + probe
        if not self.check_finite("NT-Xent loss", contrastive) or not self.check_finite("probe CE", probe):
            return None  # on_nonfinite: skip
        self.log("train/nt_xent", contrastive, prog_bar=True)
        self.log("train/probe_ce", probe)
        self.log("train/probe_acc_noisy", accuracy(probe_logits.detach(), y))
        return loss
