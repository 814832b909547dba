"""Resuming a run in its own directory: `metrics.csv` continued, not replaced (docs/design.md, "Runs, resume
and faults")."""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class AppendingWriter(ExperimentWriter):
    """A CSV experiment writer that keeps the rows of `metrics.csv` logged before step `resume_step`.

    Lightning's writer deletes an existing `metrics.csv`; rows from the resumed step on are dropped here, as the
    resumed run logs them again.
    """

    def __init__(self, log_dir: str, resume_step: int) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as f:
            reader = csv.DictReader(f)
            keys, rows = list(reader.fieldnames or []), list(reader)
        kept = [row for row in rows if not row.get("step") or int(float(row["step"])) < self.resume_step]
        self.metrics_keys = sorted(keys)
        tmp = f"{self.metrics_file_path}.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.metrics_file_path)


def continue_metrics(loggers: list[Logger], resume_step: int) -> None:
    """Make the CSV loggers of a resumed run append to their `metrics.csv` (call before anything is logged)."""
    for logger in loggers:
        if isinstance(logger, CSVLogger) and logger._experiment is None:
            os.makedirs(logger.log_dir, exist_ok=True)
            logger._experiment = AppendingWriter(logger.log_dir, resume_step)
