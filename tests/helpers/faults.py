"""Test-only callbacks injected through the config (`--trainer.callbacks+=helpers.faults.<Name>`)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class NanAtBatch(Callback):
    """Write NaN into the noisy images of the `batch`-th training batch of the run (counted from 0)."""

    def __init__(self, batch: int = 1) -> None:
        self.batch = batch

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.fit_loop.epoch_loop.total_batch_idx == self.batch:
            for view in batch.noisy.views:
                if view is not None:
                    view.fill_(float("nan"))


class NanLossAtBatch(NanAtBatch):
    """Make the student's logits (so its loss) NaN for the `batch`-th training batch only (a forward hook)."""

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.fit_loop.epoch_loop.total_batch_idx == self.batch:
            self.handle = pl_module.student.register_forward_hook(lambda m, i, out: out * float("nan"))

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if getattr(self, "handle", None) is not None:
            self.handle.remove()
            self.handle = None


class SlowCheckpointWrite(Callback):
    """From global step `step` on, make every checkpoint write slow: the `.tmp` file exists for `seconds` while
    the write is "in progress", so a test can kill the process in the middle of it."""

    def __init__(self, step: int = 0, seconds: float = 5.0) -> None:
        self.step, self.seconds = step, seconds

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.global_step >= self.step and trainer.log_dir:
            marker = os.path.join(trainer.log_dir, "checkpoints", "last.ckpt.tmp")
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            torch.save({"partial": True}, marker)  # a partial write, as a kill would leave it
            open(marker + ".slow", "w").close()  # the test kills on this, not on a normal atomic write's .tmp
            time.sleep(self.seconds)


class KillAtStep(Callback):
    """SIGKILL this process at the end of the training batch that brings the global step to `step` (before any
    checkpoint of that step is written: checkpoint callbacks run after the others)."""

    def __init__(self, step: int = 5) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def stuck_in_the_test_loop(seconds: float) -> None:
    """The injected hang (its name is what the stack dump must show)."""
    time.sleep(seconds)


class HangInTest(Callback):
    """Stall the first test batch for `seconds` (the end-of-fit test of the last weights), then go on."""

    def __init__(self, seconds: float = 4.0) -> None:
        self.seconds, self.done = seconds, False

    def on_test_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.done:
            self.done = True
            stuck_in_the_test_loop(self.seconds)
