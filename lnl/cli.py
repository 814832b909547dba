"""`lnl` command line: a LightningCLI in subclass mode; after `fit`, honest test of last and best-val checkpoints."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from lnl.console import HELP_EPILOG, EpochLine, HelpFormatter, interactive, silence_tips
from lnl.data.datamodule import NoisyLabelDataModule
from lnl.errors import ConfigError
from lnl.methods.base import LNLModule, NonFiniteError, check_manual_trainer_settings
from lnl.predict import PredictionWriter
from lnl.report.run import EpochHistory, publish_to_wandb, write_run_report

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

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Trainer:
        """Every run keeps an epoch history (learning curves) and writes predictions.csv on `predict`; a run whose
        stdout is not a terminal prints one line per epoch instead of a progress bar."""
        callbacks = [*callbacks, EpochHistory(), PredictionWriter()]
        if not interactive() and config.get("enable_progress_bar") is None:
            config["enable_progress_bar"] = False
            callbacks.append(EpochLine())
        return super()._instantiate_trainer(config, callbacks)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_chans", "model.init_args.in_chans", apply_on="instantiate")
        # Best-val checkpoint (model selection) and a separate rolling `last.ckpt` written every epoch (Lightning's
        # own save_last only writes when a top-k checkpoint was written in the same step).
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
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

    def before_fit(self) -> None:
        datamodule, checkpoint = self.datamodule, self.trainer.checkpoint_callback
        if (
            not self.model.automatic_optimization
        ):  # as written: on CPU Lightning turns 16-mixed into bf16-mixed
            trainer = self.config.fit.trainer
            check_manual_trainer_settings(
                type(self.model).__name__,
                trainer.precision,
                trainer.gradient_clip_val,
                trainer.accumulate_grad_batches,
            )
        if (
            checkpoint is not None
            and datamodule.hparams.val_per_class == 0
            and datamodule.source.predefined_parts() is None
        ):
            checkpoint.monitor = None  # no validation set: keep the last checkpoint only

    def after_fit(self) -> None:
        trainer, model, datamodule = self.trainer, self.model, self.datamodule
        if trainer.interrupted or trainer.state.status.value == "interrupted":
            return
        checkpoint = trainer.checkpoint_callback
        has_test = datamodule.has_test_set
        last = trainer.test(model, datamodule=datamodule, verbose=False) if has_test else None
        best_path = checkpoint.best_model_path if checkpoint is not None and checkpoint.monitor else ""
        best = None
        if best_path and has_test:  # loads the best-val weights into `model`
            best = trainer.test(model, datamodule=datamodule, ckpt_path=best_path, verbose=False)
        elif best_path:
            _load_weights(model, best_path)
        best_score = checkpoint.best_model_score if checkpoint is not None else None
        results = {
            **_tagged(last, "_last"),
            **_tagged(best, "_best_val"),
            "val/acc_best": float(best_score) if best_score is not None else None,
            "noise/realized_rate": datamodule.realized_rate,
            "method": type(model).__name__,
            "dataset": datamodule.hparams.dataset,
            "noise": vars(datamodule.noise) | {"tag": datamodule.noise.tag},
            "seed": int(os.environ.get("PL_GLOBAL_SEED", -1)),
            "noise_seed": datamodule.hparams.noise_seed,
            "split_seed": datamodule.hparams.split_seed,
            "labels_sha256": datamodule.labels_sha256,
            "clean_budget": int(len(datamodule.clean_index))
            + (int(len(datamodule.val_index)) if datamodule.hparams.val_labels == "clean" else 0),
            "best_checkpoint": best_path,
        }
        results.setdefault("test/acc_best_val", None)
        run_dir = trainer.log_dir or RUN_ROOT  # a collective call under DDP: every rank asks
        if trainer.is_global_zero:
            report = write_run_report(
                trainer, model, datamodule, run_dir, "best_val" if best_path else "last"
            )
            results |= report.results
            results = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in results.items()}
            results_path = os.path.join(run_dir, "results.json")
            with open(results_path, "w") as f:
                json.dump(results, f, indent=2, default=str)
            files = [os.path.join(run_dir, "labels.csv"), *report.files, results_path]
            publish_to_wandb(trainer, results, report.pictures, files)
            print(summary(results, run_dir))
        for logger in trainer.loggers:  # flush and close the W&B run: the fit is complete
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger.experiment.finish()


def _load_weights(model: LightningModule, path: str) -> None:
    """Load a checkpoint's weights (and method state such as diagnostics) into `model` in place."""
    state = torch.load(path, map_location=model.device, weights_only=False)
    model.load_state_dict(state["state_dict"])
    model.on_load_checkpoint(state)


def _tagged(outputs: list[dict[str, float]] | None, suffix: str) -> dict[str, float]:
    """`test/acc` -> `test/acc<suffix>` (and the teacher's accuracies likewise) from `trainer.test` outputs."""
    return {
        f"{k}{suffix}": float(v) for k, v in (outputs[0] if outputs else {}).items() if k.startswith("test/")
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summary(results: dict[str, Any], run_dir: str) -> str:
    """A short human summary of a finished run."""
    noise = results["noise"]
    realized = results["noise/realized_rate"]
    if noise["kind"] == "none":  # nothing added: the source's own labels (Clothing1M, your folder_csv)
        labels = "labels as given" + (
            "" if realized is None else f" (wrong among known truths {_fmt(realized)})"
        )
    else:
        labels = f"{noise['tag']} noise (realized rate {_fmt(realized)})"
    lines = [
        f"\nlnl: {results['method']} on {results['dataset']} with {labels}",
        f"  test acc (best val ckpt) {_fmt(results['test/acc_best_val'])} | "
        f"test acc (last) {_fmt(results.get('test/acc_last'))} | best val acc {_fmt(results['val/acc_best'])}",
    ]
    if "report/n_flagged" in results:
        line = (
            f"  label report: {results['report/n_flagged']} of {results['report/n_samples']} noisy-part labels "
            f"flagged, estimated noise rate {_fmt(results['report/noise_rate_estimate'])}"
        )
        if results.get("report/auroc") is not None:
            line += f", issue-score AUROC {_fmt(results['report/auroc'])}"
        lines.append(line + " (label_report.csv, corrected_labels.csv)")
    lines.append(f"  run directory: {run_dir}\n")
    return "\n".join(lines)


def main(args: list[str] | None = None) -> int:
    """Entry point of the `lnl` console script; bad input ends with one line on stderr and exit code 2."""
    argv = sys.argv[1:] if args is None else args
    silence_tips()
    if argv[:1] == ["aggregate"]:  # not a LightningCLI subcommand: results table from run directories
        from lnl.aggregate import main as aggregate_main

        return aggregate_main(argv[1:])
    if argv[:1] == ["report"]:  # not a LightningCLI subcommand: the label report of a saved checkpoint
        from lnl.report.command import main as report_main

        return report_main(argv[1:])
    if argv[:1] == ["runs"]:  # not a LightningCLI subcommand: the `lnl fit` commands of a table x seeds
        from lnl.runs import main as runs_main

        return runs_main(argv[1:])
    torch.set_float32_matmul_precision("high")
    try:
        LNLCLI(args=args)
    except Exception as error:  # our errors may arrive wrapped by jsonargparse's instantiation
        cause = _user_error(error)
        if cause is None:
            raise
        print(f"lnl: error: {cause}", file=sys.stderr)
        return 2
    return 0


def _user_error(error: BaseException | None) -> BaseException | None:
    """The ConfigError / NonFiniteError in an exception chain, if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (ConfigError, NonFiniteError)):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
