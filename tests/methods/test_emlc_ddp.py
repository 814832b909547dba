"""Two-process CPU DDP (gloo) with batch b per rank equals one process with batch 2b (BN-free tiny_mlp, DESIGN 4)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

sys.path.insert(0, str(Path(__file__).parent))
from test_emlc_kit import SynthData, fit, max_rel_diff, sgd, state  # noqa: E402

from lnl.methods.emlc import EMLC  # noqa: E402
from lnl.methods.mlc import MLC  # noqa: E402


class SaveOnRankZero(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer, module) -> None:
        if trainer.global_rank == 0:
            torch.save({"state": state(module), "world": trainer.world_size}, self.path)


def _emlc() -> EMLC:
    return EMLC(num_classes=4, backbone="tiny_mlp", k=2, corruption="adversarial", optimizer=sgd(0.2),
                teacher_optimizer=sgd(0.1, 0.5, 1e-4))  # fmt: skip


def _mlc() -> MLC:
    return MLC(num_classes=4, backbone="tiny_mlp", hypergrad="jvp", optimizer=sgd(0.2))


@pytest.mark.slow
@pytest.mark.parametrize("make", [_emlc, _mlc], ids=["emlc_k2", "mlc_jvp"])
def test_two_ranks_equal_one_process_with_double_batch(make, tmp_path) -> None:
    data = SynthData(n_batches=3, b=8, bc=8)  # global batch; each rank gets a contiguous half
    single = state(fit(make, data=data))
    out = tmp_path / "ddp.pt"
    fit(make, data=data, strategy="ddp_fork", devices=2, callbacks=[SaveOnRankZero(str(out))])
    saved = torch.load(out)
    assert saved["world"] == 2
    assert max_rel_diff(saved["state"], single) < 1e-5
    assert max_rel_diff(state(make()), single) > 1e-3  # training moved the parameters
