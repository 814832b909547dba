"""End of a fit: the label report, corrected labels, noise estimate and pictures in the run directory and in W&B."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from lnl.report.label_report import (
    collect_label_report,
    summarize,
    write_corrected_labels,
    write_label_report,
    write_probabilities,
)
from lnl.report.pictures import (
    plot_issue_scores,
    plot_label_correction,
    plot_learning_curves,
    plot_per_class_accuracy,
    plot_transitions,
)
from lnl.run.watchdog import beat

PER_CLASS_KEY = re.compile(r"_c\d{3}$")


class EpochHistory(Callback):
    """One record per training epoch of the scalar `val/*` and `train/*` metrics (per-class ones left out), kept in
    checkpoints: the learning curves of the report."""

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        record = {"epoch": float(trainer.current_epoch)}
        for key, value in trainer.callback_metrics.items():
            if key.startswith(("val/", "train/")) and not PER_CLASS_KEY.search(key) and value.numel() == 1:
                record[key] = float(value)
        self.records = [r for r in self.records if r["epoch"] != record["epoch"]] + [record]

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the history on resume; a checkpoint loaded later in the same run (testing the best-val one
        after `fit`) must not cut the live history back to that epoch."""
        if not self.records:
            self.records = list(state_dict.get("records", []))


@dataclass
class RunReport:
    """What `write_run_report` produced: `report/...` results entries, picture paths and data files."""

    results: dict[str, Any]
    pictures: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


@torch.no_grad()
def per_class_test_accuracy(model: LightningModule, datamodule: Any) -> np.ndarray:
    """The student's accuracy on the test set per class (NaN for a class without test images)."""
    device = next(model.parameters()).device
    hits = np.zeros(model.num_classes)
    counts = np.zeros(model.num_classes)
    was_training = model.training
    model.eval()
    for batch in datamodule.report_dataloader(datamodule.hparams.eval_batch_size, part="test"):
        beat()
        y = batch["y"].numpy()
        pred = model(batch["x"].to(device)).argmax(-1).cpu().numpy()
        np.add.at(counts, y, 1)
        np.add.at(hits, y, pred == y)
    model.train(was_training)
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def write_run_report(trainer: Trainer, model: LightningModule, datamodule: Any, run_dir: str,
                     weights: str) -> RunReport:  # fmt: skip
    """Label report, corrected labels, noise estimate and pictures of the model as it is now (`weights` says which
    checkpoint it holds) into `run_dir` (call on rank zero).

    The model runs on the trainer's device: Lightning's teardown after every `fit` / `test` moves the module to the
    CPU, where a GPU run's report (every training sample and the test set through the network) took minutes.
    """
    os.makedirs(run_dir, exist_ok=True)
    model.to(trainer.strategy.root_device)
    beat("after fit: label report")
    report = collect_label_report(model, datamodule, datamodule.hparams.eval_batch_size, beat)
    beat("after fit: label report files and pictures")
    summary = summarize(report, model.num_classes)
    files = [
        write_label_report(report, os.path.join(run_dir, "label_report.csv")),
        write_corrected_labels(report, datamodule, os.path.join(run_dir, "corrected_labels.csv")),
        write_probabilities(report, os.path.join(run_dir, "probabilities.npy")),
    ]
    results = summary.as_results() | {"report/weights": weights}
    pictures = [
        plot_transitions(summary, os.path.join(run_dir, "transition.png"), report.class_names),
        plot_issue_scores(report, os.path.join(run_dir, "issue_scores.png")),
    ]
    if datamodule.has_test_set:
        beat("after fit: per-class test accuracy")
        accuracy = per_class_test_accuracy(model, datamodule)
        results["report/test_acc_per_class"] = [
            None if math.isnan(a) else round(float(a), 5) for a in accuracy
        ]
        path = os.path.join(run_dir, "per_class_accuracy.png")
        pictures.append(plot_per_class_accuracy(accuracy, path, class_names=report.class_names))
    beat("after fit: learning curves")
    history = next((c.records for c in trainer.callbacks if isinstance(c, EpochHistory)), [])
    if history:
        pictures.append(plot_learning_curves(history, os.path.join(run_dir, "learning_curves.png")))
    correction = plot_label_correction(report, history, os.path.join(run_dir, "label_correction.png"))
    pictures += (
        [correction] if correction else []
    )  # DML draws dml_selection.png itself (lnl.methods.dml_diagnostics)
    return RunReport(results, pictures, files)


def publish_to_wandb(
    trainer: Trainer, results: dict[str, Any], pictures: list[str], files: list[str]
) -> None:
    """W&B gets the results' numbers in its summary, every picture as an image and the run's files as an artifact."""
    for logger in trainer.loggers:
        if not isinstance(logger, WandbLogger):
            continue
        import wandb

        run = logger.experiment
        run.summary.update(
            {k: v for k, v in results.items() if isinstance(v, (int, float, str)) or v is None}
        )
        for path in pictures:
            logger.log_image(key=f"report/{os.path.splitext(os.path.basename(path))[0]}", images=[path])
        artifact = wandb.Artifact(f"run-{run.id}-report", type="run-report")
        for path in files:
            if os.path.isfile(path):
                artifact.add_file(path)
        run.log_artifact(artifact)
