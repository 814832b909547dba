"""Checkpoints that survive a kill: atomic writes, and a rolling `last.ckpt` refreshed every N training steps.

See docs/design.md, "Runs, resume and faults".
"""

from __future__ import annotations

import os
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lnl.validation import off_or_positive


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
    """The `last_checkpoint` callback: `last.ckpt` at every epoch end and, with `every_n_steps = N`, also every N
    global steps inside an epoch (Lightning's own `every_n_train_steps` would replace the epoch-end save).

    The epoch's last batch is left to the end-of-epoch save, which comes after validation, so a resume never
    repeats or skips a validation.
    """

    def __init__(self, *args: Any, every_n_steps: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.every_n_steps = off_or_positive("last_checkpoint.every_n_steps", every_n_steps)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if (
            not self.every_n_steps
            or trainer.global_step % self.every_n_steps
            or batch_idx + 1 >= trainer.num_training_batches
            or self._should_skip_saving_checkpoint(trainer)
        ):
            return
        self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        for logger in trainer.loggers:  # the metrics rows up to this checkpoint are on disk too
            logger.save()
