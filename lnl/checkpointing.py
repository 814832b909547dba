"""Checkpoints that survive a kill: atomic writes, and a rolling `last.ckpt` refreshed every N training steps.

See docs/design.md, "Runs, resume and faults".
"""

from __future__ import annotations

import os
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write `<path>.tmp`, fsync, then `os.replace` it over `<path>`: a kill mid-write leaves the previous
    checkpoint intact and loadable."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        tmp = f"{path}.tmp"
        super().save_checkpoint(checkpoint, tmp, storage_options)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)


class RollingCheckpoint(ModelCheckpoint):
    """The `last_checkpoint` callback: `last.ckpt` at every epoch end and, with `every_n_train_steps = N`, every
    N training steps inside an epoch (the epoch's last step is left to the end-of-epoch save, which comes after
    validation, so a resume never repeats or skips a validation)."""

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
