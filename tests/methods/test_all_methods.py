"""Properties every method must have: it never trains on `y_true`, and bi-level methods refuse fp16."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from lnl.data.datamodule import NoisyLabelDataModule
from lnl.data.noise import NoiseSpec
from lnl.errors import ConfigError
from lnl.methods import CE, DML, EMLC, MLC
from lnl.methods.base import check_manual_trainer_settings

METHODS = [CE, DML, EMLC, MLC]


def _digits() -> NoisyLabelDataModule:
    return NoisyLabelDataModule(
        "digits", noise=NoiseSpec("symmetric", 0.4), clean_per_class=4, val_per_class=2, batch_size=16
    )


def _fit(method: type, dm: NoisyLabelDataModule, tmp_path: Path, **trainer_kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = method(
        num_classes=10, backbone="tiny_cnn", in_chans=1, optimizer=partial(torch.optim.SGD, lr=0.05)
    )
    trainer = Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0, accelerator="cpu", logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path, **trainer_kwargs)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.__name__)
def test_training_with_shuffled_true_labels_gives_identical_parameters(method: type, tmp_path: Path) -> None:
    reference = _fit(method, _digits(), tmp_path)
    shuffled = _digits()
    shuffled.true_labels = np.random.default_rng(1).permutation(shuffled.true_labels)
    params = _fit(method, shuffled, tmp_path)
    assert reference.keys() == params.keys()
    for key, value in reference.items():
        torch.testing.assert_close(params[key], value, rtol=0, atol=0, msg=key)


def test_fp16_is_refused_with_a_bf16_recommendation() -> None:
    with pytest.raises(ConfigError, match="'16-mixed' for DML: .* use 'bf16-mixed'"):
        check_manual_trainer_settings("DML", "16-mixed")
    check_manual_trainer_settings("DML", "bf16-mixed")
    with pytest.raises(ConfigError, match="gradient_clip_val = 1.0 .* set model.grad_clip"):
        check_manual_trainer_settings("EMLC", "32", gradient_clip_val=1.0)
    with pytest.raises(ConfigError, match="accumulate_grad_batches = 2"):
        check_manual_trainer_settings("MLC", "32", accumulate_grad_batches=2)
