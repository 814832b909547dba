"""Meta-networks: EMLC's label corrector (EMLC §3.6, Fig. 3), MLC's meta-net (Zheng et al. 2021) and MW-Net's
weighting function (Shu et al. 2019).

The first two map (sample, noisy label ỹ) to a soft target q over C classes that the student is trained on, the
last maps a sample's loss to its weight; their parameters are the meta-parameters α of the bi-level problem.
Targets and weights are computed in float32 or wider (also under bf16 autocast) because the meta-gradient
surrogates are linear in them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lnl.losses import corrupt_odd_positions
from lnl.models.backbones import features_and_logits
from lnl.numerics import wide


def gated_target(gate_logit: Tensor, y: Tensor, logits: Tensor) -> Tensor:
    """q = w·onehot(ỹ) + (1 − w)·softmax(logits), w = sigmoid(gate logit) (EMLC Fig. 3, App. D Eq. 31)."""
    probs = F.softmax(wide(logits), dim=-1)
    w = torch.sigmoid(wide(gate_logit)).to(probs.dtype)[:, None]
    onehot = F.one_hot(y, logits.shape[-1]).to(probs.dtype)
    return w * onehot + (1.0 - w) * probs


class LabelCorrector(nn.Module):
    """EMLC teacher: own backbone (features h, classifier logits), label embedding E (C × 128) of ỹ, and a gate MLP
    [h, E(ỹ)] → 128 → ReLU → 1 whose logit a gives w = sigmoid(a); q = w·onehot(ỹ) + (1 − w)·softmax(logits).

    `forward(x)` returns the classifier logits (the teacher's own prediction, evaluated as `val/acc_teacher`).
    """

    def __init__(
        self, backbone: nn.Module, num_classes: int, embed_dim: int = 128, hidden: int = 128
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes, embed_dim)
        self.gate = nn.Sequential(
            nn.Linear(int(backbone.num_features) + embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Penultimate features h [B, D] and classifier logits [B, C] of the teacher's backbone."""
        return features_and_logits(self.backbone, x)

    def gate_logit(self, h: Tensor, y: Tensor) -> Tensor:
        """The gate logit a [B] for features h and (possibly corrupted) labels y."""
        z = self.embedding(y).to(h.dtype)
        return self.gate(torch.cat([h, z], dim=1)).squeeze(1)

    def correct(self, h: Tensor, logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(q [B, C] float32, gate logit a [B]) for noisy labels y."""
        a = self.gate_logit(h, y)
        return gated_target(a, y, logits), a

    def supervised_loss(
        self, x: Tensor, y: Tensor, corruption: str = "none", generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """CE(teacher logits, y) on clean images, + with `corruption` (`random` / `adversarial`) the BCE of the gate
        logit against "label still correct" on the batch with its odd positions corrupted (EMLC Eq. 11), in fp32 or
        wider; returns (loss, scalars to log)."""
        h, logits = self.features_and_logits(x)
        ce = F.cross_entropy(wide(logits), y)
        logs, loss = {"train/teacher_ce": ce.detach()}, ce
        if corruption != "none":
            y_tilde, corrupt = corrupt_odd_positions(y, logits, corruption, generator)
            a = wide(self.gate_logit(h, y_tilde))
            bce = F.binary_cross_entropy_with_logits(a, (y_tilde == y).to(a.dtype))
            w = torch.sigmoid(a.detach())
            loss = loss + bce
            logs |= {"train/bce": bce.detach(), "train/gate_clean": w[~corrupt].mean(),
                     "train/gate_corrupted": w[corrupt].mean()}  # fmt: skip
        return loss, logs

    def forward(self, x: Tensor) -> Tensor:
        return self.features_and_logits(x)[1]


class MetaLabelNet(nn.Module):
    """MLC meta-net: [sg h_student, E(ỹ)] → 128 → tanh → 128 → tanh → C, softmax.

    Zheng, Awadallah & Dumais, "Meta label correction for noisy label learning", AAAI 2021, arXiv:1911.03809
    (the official code's `MetaNet`).

    With `skip=True` one extra output unit is a gate logit a and q = w·onehot(ỹ) + (1 − w)·softmax (as EMLC's gate).
    The caller passes the student's penultimate features; they are detached here.
    """

    def __init__(
        self, feature_dim: int, num_classes: int, embed_dim: int = 128, hidden: int = 128, skip: bool = False
    ) -> None:
        super().__init__()
        self.num_classes, self.skip = num_classes, skip
        self.embedding = nn.Embedding(num_classes, embed_dim)
        self.net = nn.Sequential(
            nn.Linear(feature_dim + embed_dim, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, num_classes + int(skip)),
        )
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, h: Tensor, y: Tensor) -> Tensor:
        h = h.detach()
        out = self.net(torch.cat([h, self.embedding(y).to(h.dtype)], dim=1))
        if self.skip:
            return gated_target(out[:, -1], y, out[:, :-1])
        return F.softmax(wide(out), dim=-1)


class WeightNet(nn.Module):
    """MW-Net's weighting function V(ℓ; α): 1 → hidden → ReLU → 1 → sigmoid on the detached per-sample loss
    (Shu et al. 2019: an MLP with one hidden layer; the official `VNet(1, 100, 1)`, default Linear init).

    Returns weights in (0, 1) of shape [B], in the parameters' dtype with autocast off.
    """

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, losses: Tensor) -> Tensor:
        dtype = self.net[0].weight.dtype
        with torch.autocast(losses.device.type, enabled=False):
            return torch.sigmoid(self.net(losses.detach().to(dtype)[:, None])).squeeze(1)
