"""What a run prints: one line per epoch when stdout is not a terminal, no advertising tips, a pointing `--help`."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import Callback, LightningModule, Trainer

HELP_EPILOG = """\
Where to look next (each prints only its own options):
  lnl fit --model.help DML          a method's options (CE, DML, EMLC, MLC, MWNet, L2RW, SimCLR)
  lnl fit --data.help NoisyLabelDataModule
                                    data, split and noise options; noise is the group `data.noise`
                                    (kind: none|symmetric|pairflip|asymmetric|uniform|random_flip|flip2|instance|file,
                                    rate, count: sampled|exact), your own images are `dataset: folder_csv`
                                    with `folder: {train_csv, val_csv, test_csv, clean_csv, image_size}`
  lnl fit --config configs/quickstart.yaml --print_config
                                    a whole resolved config to start from
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help formatter that keeps the epilog's line breaks."""


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


class _NoSeedLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Seed set to" not in str(record.msg)


def silence_seed_line() -> None:
    """Drop Lightning's "Seed set to N" line: it came before any one-line error about the config (the seed is in
    the run's config.yaml and results.json)."""
    logger = logging.getLogger("lightning.fabric.utilities.seed")
    if not any(isinstance(f, _NoSeedLine) for f in logger.filters):
        logger.addFilter(_NoSeedLine())


def silence_tips() -> None:
    """Drop Lightning's advertising tips (litlogger / litmodels) from the log."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in logger.filters):
            logger.addFilter(_NoTips())


def silence_presynced_advice() -> None:
    """Drop Lightning's "use `sync_dist=True`" advice for DML's epoch values, which are already equal on every rank
    (one line per key and run under DDP, 40 lines for CIFAR-10); the advice stays for every other key."""
    from lnl.methods.dml_diagnostics import PRESYNCED_EPOCH_KEYS

    warnings.filterwarnings(
        "ignore", message=rf"It is recommended to use `self.log\('{PRESYNCED_EPOCH_KEYS}',"
    )


def interactive() -> bool:
    """Whether stdout is a terminal (progress bars) rather than a log file or a pipe (one line per epoch)."""
    return sys.stdout.isatty()


class EpochLine(Callback):
    """Prints one line per training epoch: epoch, wall time, the epoch's losses and validation accuracies."""

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        shown = [
            k for k in sorted(metrics) if k.startswith("val/acc") or k in ("train/loss", "train/loss_epoch")
        ]
        values = " | ".join(f"{k} {float(metrics[k]):.4f}" for k in shown if metrics[k].numel() == 1)
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        elapsed = time.perf_counter() - getattr(self, "_start", time.perf_counter())
        print(f"epoch {trainer.current_epoch + 1}/{total} | {elapsed:.1f} s | {values}", flush=True)
