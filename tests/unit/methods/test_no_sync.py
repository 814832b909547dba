"""No host-device sync inside a training step (deferred finiteness checks, as on CUDA).

On the CPU nothing waits, but the ops that would wait on a GPU still run: `aten::_local_scalar_dense` (behind
`.item()`, `float(t)`, `bool(t)`, `.tolist()`) and `aten::nonzero` (behind boolean indexing). A dispatch mode
counts them per training step; the threshold refresh of DML's selection (once per epoch after epoch 0) and
the deferred-flag reads at logging intervals are the allowed exceptions. Two CPU-only reads are set aside:
`F.one_hot` checks its labels with `.item()` on the CPU only (ATen's Onehot.cpp skips it on CUDA), so the test
swaps in the unchecked form; Adam's step counter is a host tensor (capturable=False), so MLC's meta-optimizer
is SGD here. Batches carry the host flag `has_true`, as the data module sets it before the transfer.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback
from torch.utils._python_dispatch import TorchDispatchMode

from helpers.synthetic import C, SynthData, fit, sgd
from lnl.methods import CE, DML, EMLC, L2RW, MLC, MWNet, SimCLR
from lnl.methods.selection import SelectionConfig

SYNCS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default"}
METHODS: dict[str, tuple[type, dict[str, Any]]] = {
    "CE": (CE, {}),
    "CE_crossfit": (CE, {"cross_fit_folds": 3}),
    "DML": (DML, {"teacher_optimizer": sgd(0.1), "selection": SelectionConfig(warmup_epochs=1)}),
    "DML_global": (DML, {"teacher_optimizer": sgd(0.1), "selection": SelectionConfig(rule="global")}),
    "EMLC": (EMLC, {"teacher_optimizer": sgd(0.05, 0.0, 0.0)}),
    "MLC": (MLC, {"meta_optimizer": sgd(0.1, 0.0, 0.0)}),
    "MWNet": (MWNet, {"meta_optimizer": sgd(0.5, 0.0, 0.0)}),
    "L2RW": (L2RW, {}),
    "SimCLR": (SimCLR, {}),
}


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if str(func) in SYNCS:
            self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


class SyncsPerStep(Callback):
    """Counts the would-be syncs of each training step of epochs >= 1 (epoch 0 refreshes DML's τ every step)."""

    def __init__(self) -> None:
        self.steps: list[Counter[str]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
        self.mode = _Count() if trainer.current_epoch >= 1 and batch_idx >= 1 else None
        if self.mode is not None:
            self.mode.__enter__()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.steps.append(self.mode.ops)


@pytest.mark.parametrize("name", list(METHODS))
def test_a_training_step_reads_nothing_back_from_the_device(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unchecked_one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
        return torch.zeros(*y.shape, num_classes, dtype=torch.long, device=y.device).scatter_(
            -1, y[..., None], 1
        )

    monkeypatch.setattr(torch.nn.functional, "one_hot", unchecked_one_hot)
    cls, opts = METHODS[name]

    def build():
        model = cls(num_classes=C, backbone="tiny_cnn", optimizer=sgd(0.1), **opts)
        model.finite_checks = "deferred"
        return model

    spy = SyncsPerStep()
    fit(build, data=SynthData(n_batches=4), max_epochs=2, log_every_n_steps=1000, callbacks=[spy])
    assert len(spy.steps) == 3 and all(not c for c in spy.steps), spy.steps


def test_masked_mean_is_the_mean_over_masked_in_samples_without_reading_back() -> None:
    from lnl.methods.masked_mean import MaskedMean

    metric, values = MaskedMean(), [torch.randn(7) for _ in range(3)]
    masks = [v > 0 for v in values]
    with _Count() as mode:
        for v, m in zip(values, masks):
            metric.update(v, m)
    assert not mode.ops
    torch.testing.assert_close(metric.compute(), torch.cat(values)[torch.cat(masks)].mean())
    empty = MaskedMean()
    empty.update(torch.ones(3), torch.zeros(3, dtype=torch.bool))
    assert torch.isnan(empty.compute())
