"""`lnl fit|validate|test|predict`: a LightningCLI in subclass mode; after `fit`, an honest test of the last and
best-val checkpoints (lnl/run/results.py)."""

from __future__ import annotations

import errno
import json
import os
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lnl.data.datamodule import NoisyLabelDataModule
from lnl.errors import ConfigError, check_yaml_files, parse_error_line
from lnl.methods.base import LNLModule, NonFiniteError
from lnl.run import preflight, run_guard
from lnl.run.checkpointing import AtomicCheckpointIO, RollingCheckpoint
from lnl.run.console import (
    HELP_EPILOG,
    EpochLine,
    HelpFormatter,
    interactive,
    silence_presynced_advice,
    silence_seed_line,
    silence_tips,
)
from lnl.run.ddp import build_ddp_on_current_stream
from lnl.run.fit_report import EpochHistory
from lnl.run.predict import PredictionWriter
from lnl.run.results import finish_fit
from lnl.run.resume import continue_metrics
from lnl.run.watchdog import StallWatchdog
from lnl.run.watchdog import stop as stop_watchdog

RUN_ROOT = "runs"


class SaveConfigEverywhere(SaveConfigCallback):
    """Save the resolved config as `config.yaml` in the run directory and, when W&B logs, into the W&B run."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                config = self.parser.dump(self.config, skip_none=False, format="json")
                logger.experiment.config.update(json.loads(config), allow_val_change=True)


class LNLCLI(LightningCLI):
    """`lnl fit|validate|test|predict --config configs/<method>_<dataset>_<noise>.yaml`.

    After `fit` it tests the last and best-val checkpoints into `results.json` (docs/design.md, "Layout").
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", SaveConfigEverywhere)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("parser_kwargs", {"exit_on_error": False})  # main() prints parse errors as one line
        kwargs.setdefault(
            "trainer_defaults", {"logger": {"class_path": "CSVLogger", "init_args": {"save_dir": RUN_ROOT}}}
        )
        super().__init__(LNLModule, NoisyLabelDataModule, *args, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("epilog", HELP_EPILOG)
        kwargs.setdefault("formatter_class", HelpFormatter)
        return super().init_parser(**kwargs)

    def add_subcommands(self, parser: LightningArgumentParser, subcommands: dict) -> None:
        super().add_subcommands(parser, subcommands)
        for subparser in self._subcommand_parsers.values():
            subparser.epilog, subparser.formatter_class = HELP_EPILOG, HelpFormatter

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_chans", "model.init_args.in_chans", apply_on="instantiate")
        # Best-val checkpoint (model selection) and a separate rolling `last.ckpt` written every epoch (Lightning's
        # own save_last only writes when a top-k checkpoint was written in the same step) and, with
        # `last_checkpoint.every_n_steps: N`, every N steps inside an epoch (lnl/run/checkpointing.py).
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(RollingCheckpoint, "last_checkpoint")
        parser.add_argument(
            "--resume_other_run",
            type=bool,
            default=False,
            help="fit --ckpt_path of a finished run: continue it in a new run directory (that run's files stay "
            "as they are); without it such a resume is refused",
        )
        # A stage without progress for `watchdog.timeout_s` leaves every thread's stack in <run>/stacks.txt.
        parser.add_lightning_class_args(StallWatchdog, "watchdog")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best-epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
                "last_checkpoint.filename": "last",
                "last_checkpoint.enable_version_counter": False,
            }
        )

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Trainer:
        """Every run keeps an epoch history (learning curves) and writes predictions.csv on `predict`; a run whose
        stdout is not a terminal prints one line per epoch instead of a progress bar."""
        callbacks = [*callbacks, EpochHistory(), PredictionWriter()]
        if not interactive() and config.get("enable_progress_bar") is None:
            config["enable_progress_bar"] = False
            callbacks.append(EpochLine())
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, writing checkpoints atomically (temp file + rename) unless a plugin chose other IO, with
        DDP built on the current CUDA stream (lnl/run/ddp.py).

        First, while nothing is printed or written yet, the checks that need the built model and data, and a fit
        takes its run directory's lock (a second `lnl fit` on the same directory is refused)."""
        subcommand = self.config.get("subcommand")
        if subcommand is not None:
            run_guard.check_model_and_data(
                self.model, self.datamodule, self._checkpoint, self.config[subcommand], subcommand
            )
        if subcommand == "fit" and rank_zero_only.rank == 0:
            directory = _logger_dir(self.config_init[subcommand]["trainer"].get("logger"))
            if directory is not None:
                run_guard.lock_run_dir(Path(directory))
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        build_ddp_on_current_stream(trainer.strategy)
        return trainer

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then check what can be checked before anything is seeded, built or written (preflight)."""
        super().parse_arguments(parser, args)
        self._checkpoint: dict[str, Any] | None = None
        self._resume_in_place = False
        subcommand = self.config.get("subcommand")
        if subcommand is None:
            return
        config = self.config[subcommand]
        if subcommand != "fit" and not config.ckpt_path:
            raise ConfigError(
                f"lnl {subcommand} needs --ckpt_path, the checkpoint to use (e.g. "
                "runs/<name>/version_N/checkpoints/last.ckpt): without one it would use untrained weights"
            )
        if config.ckpt_path and config.ckpt_path not in preflight.LIGHTNING_CKPT_KEYWORDS:
            self._checkpoint = preflight.read_checkpoint(config.ckpt_path)
            dataset = preflight.config_value(config.data, "init_args.dataset")
            run_guard.check_checkpoint_identity(
                self._checkpoint, config.model.class_path, dataset, config.ckpt_path
            )
        if subcommand == "fit":
            preflight.check_max_epochs(config.trainer.max_epochs, self._checkpoint)
        preflight.check_data_values(config.data)
        preflight.check_optimizers(config.model)
        logger = _run_logger_args(config.trainer)
        if logger is None:
            return
        what = "trainer.logger.init_args.save_dir"
        if config.trainer.default_root_dir:  # honoured: runs go there, not to the config's save_dir
            logger.save_dir, what = config.trainer.default_root_dir, "trainer.default_root_dir"
        run = preflight.run_dir_of(config.ckpt_path) if self._checkpoint is not None else None
        first_rank = rank_zero_only.rank == 0  # other ranks start after rank 0 has made the run directory
        if subcommand == "fit" and run is not None:
            self._resume_in_place = run_guard.resume_in_place(run, config.ckpt_path, config.resume_other_run)
        if self._resume_in_place:  # the checkpoint's own run directory
            logger.save_dir, logger.name, logger.version = run.save_dir, run.name, run.version
        elif run is not None and subcommand != "fit":  # evaluation: <run>/eval/<stage>_<checkpoint>[_k]/
            logger.save_dir, logger.name = str(run.path), "eval"
            version = f"{subcommand}_{preflight.checkpoint_tag(config.ckpt_path)}"
            logger.version = run_guard.free_name(run.path / "eval" / version).name if first_rank else version
        elif subcommand == "fit" and logger.version is not None and first_rank:  # an explicit version
            version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
            target = Path(logger.save_dir) / (logger.name or "") / version
            if config.resume_other_run and target.exists():
                logger.version = None  # e.g. the config.yaml of the resumed run: a new version_N
            else:
                run_guard.check_new_run_dir(target, f"trainer.logger.init_args.version = {logger.version}")
        preflight.check_writable(logger.save_dir, what)

    def _prepare_resume(self) -> None:
        """Continue the run's `metrics.csv` when resuming in place."""
        checkpoint = self._checkpoint or {}
        if self._resume_in_place and self.trainer.is_global_zero:
            continue_metrics(self.trainer.loggers, int(checkpoint.get("global_step", 0)))
        self._checkpoint = None  # the trainer loads it again itself

    def _tag_metrics(self) -> None:
        """Evaluation metrics say which checkpoint they came from (`test/acc_last`, `test/acc_best-epoch012`)."""
        path = self.config[self.subcommand].ckpt_path
        self.model.metric_suffix = f"_{preflight.checkpoint_tag(path)}" if path else ""
        self._checkpoint = None

    before_test = before_validate = before_predict = _tag_metrics

    def before_fit(self) -> None:
        self._prepare_resume()
        datamodule, checkpoint = self.datamodule, self.trainer.checkpoint_callback
        if (
            checkpoint is not None
            and datamodule.hparams.val_per_class == 0
            and datamodule.source.predefined_parts() is None
        ):
            checkpoint.monitor = None  # no validation set: keep the last checkpoint only

    def after_fit(self) -> None:
        finish_fit(self.trainer, self.model, self.datamodule, RUN_ROOT)


def quiet() -> None:
    """Lightning's tips, seed line and advice that do not apply here stay unprinted (fit and `lnl report`)."""
    silence_tips()
    silence_seed_line()
    silence_presynced_advice()
    # LightningCLI warns when args are passed (argv minus --debug; lnl report)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # inside Lightning


def _run_logger_args(trainer: Any) -> Any:
    """The init_args of the logger that names the run directory (the first; CSV or TensorBoard), if any."""
    loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    first = loggers[0] if loggers else None
    class_path = getattr(first, "class_path", None) or ""
    if class_path.rpartition(".")[2] in ("CSVLogger", "TensorBoardLogger"):
        return first.init_args
    return None


def _logger_dir(logger: Any) -> str | None:
    """The run directory the Trainer's first logger will write (Trainer.log_dir), known before the Trainer exists."""
    logger = logger[0] if isinstance(logger, list) and logger else logger
    return (
        logger.log_dir if isinstance(logger, (CSVLogger, TensorBoardLogger)) else None
    )  # W&B: a shared save_dir


def main(args: list[str] | None = None) -> int:
    """Entry point of the `lnl` console script; bad input ends with one line on stderr and exit code 2.

    `--debug` (anywhere) or LNL_DEBUG=1 shows the traceback instead.
    """
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv or os.environ.get("LNL_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    quiet()
    torch.set_float32_matmul_precision("high")
    try:
        check_yaml_files(argv)
        LNLCLI(args=argv)
    except Exception as error:  # our errors may arrive wrapped by jsonargparse's instantiation
        message = _user_error(error)
        if message is None or debug:
            raise
        print(f"lnl: error: {message}", file=sys.stderr)
        return 2
    finally:
        run_guard.release_run_locks()
        stop_watchdog()  # done; the interpreter's exit handlers are watched again (lnl/run/watchdog.py)
    return 0


def _user_error(error: BaseException | None) -> str | None:
    """One line for a user error (ours, Lightning's MisconfigurationException, a parse error) in an exception
    chain, if there is one."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (ConfigError, NonFiniteError, MisconfigurationException)):
            return " ".join(str(error).split("\n"))
        if isinstance(error, ArgumentError):
            return parse_error_line(str(error))
        if isinstance(error, OSError) and error.errno in (
            errno.EACCES,
            errno.EROFS,
            errno.ENOSPC,
            errno.EDQUOT,
        ):
            return f"{error.strerror}: {error.filename!r}"  # e.g. a run directory that became unwritable
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
