"""Per-step diagnostics of label-correcting methods (logged, never used by the update)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lnl.data.batch import Stream
from lnl.methods.base import has_true_labels


def log_label_correction(module: Any, q: Tensor, gate_logit: Tensor, noisy_batch: Stream) -> None:
    """EMLC: the gate's mean weight w = sigmoid(a) on the noisy batch; with true labels, per epoch, how often argmax q
    recovers the true label (all, wrongly labelled) and w on right / wrong given labels (EMLC Fig. 3's gate)."""
    w = torch.sigmoid(gate_logit.detach().float())
    module.log("train/gate_noisy", w.mean(), on_step=True, on_epoch=False, batch_size=w.shape[0])
    if not has_true_labels(noisy_batch):
        return
    y, y_true = noisy_batch.y, noisy_batch.y_true
    known = y_true >= 0
    right, wrong = known & (y == y_true), known & (y != y_true)
    hit = (q.detach().argmax(1) == y_true).float()
    epoch = {"train/label_recovery": (hit, known), "train/wrong_label_recovery": (hit, wrong),
             "train/gate_right_label": (w, right), "train/gate_wrong_label": (w, wrong)}  # fmt: skip
    for name, (value, mask) in epoch.items():
        module.log_masked_mean(name, value, mask)
