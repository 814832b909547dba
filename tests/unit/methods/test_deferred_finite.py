"""Deferred finiteness checks (the default for CUDA tensors): no sync per step, and the guard still bites."""

from __future__ import annotations

import pytest

from helpers.faults import NanAtBatch
from helpers.synthetic import C, SynthData, fit, sgd
from lnl.methods.base import NonFiniteError
from lnl.methods.ce import CE
from lnl.methods.dml import DML


def _deferred(cls: type, **kw):
    def build():
        model = cls(num_classes=C, backbone="tiny_cnn", optimizer=sgd(0.1), **kw)
        model.finite_checks = "deferred"
        return model

    return build


@pytest.mark.parametrize("cls,step", [(CE, 1), (DML, 2)])  # a DML batch steps two optimizers
def test_a_nan_batch_is_reported_at_the_next_check_naming_its_step_and_term(cls: type, step: int) -> None:
    reads: list[int] = []

    class Counting(cls):
        def raise_deferred_nonfinite(self) -> None:
            reads.append(self.global_step)
            super().raise_deferred_nonfinite()

    with pytest.raises(NonFiniteError, match=rf"non-finite input batch at step {step} \(found at step"):
        fit(_deferred(Counting), data=SynthData(n_batches=6), log_every_n_steps=3,
            callbacks=[NanAtBatch(batch=1)])  # fmt: skip
    assert len(reads) == 1  # read back once, at the interval (batch 3), not at every step


def test_finite_deferred_fit_reads_back_once_per_interval_and_epoch() -> None:
    model = fit(_deferred(CE), data=SynthData(n_batches=6), log_every_n_steps=2, max_epochs=2)
    assert model.global_step == 12 and all(int(v) == -1 for v in model._first_nonfinite.values())
