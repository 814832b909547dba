"""`lnl predict`: `predictions.csv` (index or path, given / predicted label and class name, confidence, top-k) in the checkpoint's run
directory, for a split of the data module or a folder / CSV of new images (`data.predict_images`)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from lnl.report.class_names import name_of
from lnl.run.preflight import checkpoint_run_dir
from lnl.run.run_guard import write_new_file

TOP_K = 5


def _class_names(trainer: Trainer) -> list[str] | None:
    """The data's class names (id -> name), if its data module has a source that names them."""
    source = getattr(trainer.datamodule, "source", None)
    return getattr(source, "class_names", None)


def output_dir(trainer: Trainer) -> str:
    """The run directory of the checkpoint being used (`.../version_N` for `.../version_N/checkpoints/x.ckpt`),
    else the trainer's log directory."""
    return str(checkpoint_run_dir(trainer.ckpt_path)) if trainer.ckpt_path else trainer.log_dir or "."


class PredictionWriter(BasePredictionWriter):
    """Collects each predict batch's class probabilities and writes them as `predictions.csv` at the epoch's end
    (`predictions_rank<r>.csv` per rank under several processes); a second predict into the same run directory
    writes `predictions_1.csv`, then `predictions_2.csv`, ... (an earlier file is never replaced)."""

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="batch_and_epoch")
        self.filename = filename
        self.rows: list[list[Any]] = []
        self.path: str | None = None

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.rows = []

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any,  # noqa: PLR0913
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:  # fmt: skip
        probs = prediction.float().cpu()
        top = torch.topk(probs, min(TOP_K, probs.shape[1]), dim=1)
        paths = batch.get("path")
        names = _class_names(trainer)
        for r in range(probs.shape[0]):
            given = int(batch["y"][r]) if "y" in batch else -1
            row: list[Any] = [int(batch["index"][r]), paths[r] if paths is not None else ""]
            row += [given if given >= 0 else "", name_of(names, given)]
            row += [
                int(top.indices[r, 0]),
                name_of(names, int(top.indices[r, 0])),
                f"{float(top.values[r, 0]):.5f}",
            ]
            for label, p in zip(top.indices[r].tolist(), top.values[r].tolist()):
                row += [label, name_of(names, label), f"{p:.5f}"]
            self.rows.append(row)

    def write_on_epoch_end(self, trainer: Trainer, pl_module: LightningModule, predictions: Any,
                           batch_indices: Any) -> None:  # fmt: skip
        directory = output_dir(trainer)
        name = self.filename if trainer.world_size == 1 else f"predictions_rank{trainer.global_rank}.csv"
        k = (len(self.rows[0]) - 7) // 3 if self.rows else 0
        header = [
            "index",
            "path",
            "given_label",
            "given_name",
            "predicted_label",
            "predicted_name",
            "confidence",
        ]
        header += [f"top{j + 1}_{what}" for j in range(k) for what in ("label", "name", "prob")]
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(self.rows)
        self.path = str(
            write_new_file(Path(directory) / name, text.getvalue())
        )  # never replaces an earlier one
        if trainer.is_global_zero:
            print(f"lnl: wrote {len(self.rows)} predictions to {self.path}")
