"""The number an official script reports, logged beside lnl's own: the best test accuracy over evaluations.

The official MW-Net scripts (`MW-Net.py`: `best_acc = max(test_acc)` after every epoch;
`train_WRN-28-10_Meta_PGC.py`: `best_prec1 = max(top1_test.avg, best_prec1)` at every evaluation) report the
maximum test accuracy seen during training, i.e. the test set also selects the checkpoint. lnl reports the test
accuracy of the checkpoint chosen on validation (`test/acc_best_val`); `BestTestAccuracy` adds the paper's
quantity as `test/acc_best_test_paper_protocol` so that a paper row and an lnl row can be compared for what they
are. It never feeds selection: the checkpoint callback monitors `val/acc` only, and this callback only reads.
Evaluated once per validation epoch (the WRN script evaluates more often, so its maximum can only be higher).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

KEY = "test/acc_best_test_paper_protocol"
EPOCH_KEY = "test/acc_during_fit_paper_protocol"


class BestTestAccuracy(Callback):
    """After each validation epoch of a fit: the student's test accuracy, and its running maximum (`KEY`)."""

    def __init__(self) -> None:
        self.best: float | None = None

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if trainer.sanity_checking or datamodule is None or not datamodule.has_test_set:
            return
        acc = test_accuracy(pl_module, datamodule.test_dataloader(), trainer)
        self.best = acc if self.best is None else max(self.best, acc)
        pl_module.log(EPOCH_KEY, acc, on_step=False, on_epoch=True)
        pl_module.log(KEY, self.best, on_step=False, on_epoch=True)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")


@torch.no_grad()
def test_accuracy(pl_module: LightningModule, loader: Any, trainer: Trainer) -> float:
    """Top-1 accuracy of `pl_module(x)` (the student) over `loader`, counts summed over ranks."""
    was_training = pl_module.training
    pl_module.eval()
    counts = torch.zeros(2, dtype=torch.float64, device=pl_module.device)
    for batch in loader:
        x, y = batch["x"].to(pl_module.device), batch["y"].to(pl_module.device)
        counts[0] += (pl_module(x).argmax(-1) == y).sum()
        counts[1] += y.numel()
    pl_module.train(was_training)
    counts = trainer.strategy.reduce(counts, reduce_op="sum")
    return float(counts[0] / counts[1].clamp_min(1))


def paper_protocol_results(trainer: Trainer) -> dict[str, float]:
    """`{KEY: best}` for results.json when a `BestTestAccuracy` callback ran, else {}."""
    found = [cb.best for cb in trainer.callbacks if isinstance(cb, BestTestAccuracy) and cb.best is not None]
    return {KEY: found[0]} if found else {}
