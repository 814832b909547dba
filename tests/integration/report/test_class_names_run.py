"""Labels given as class names through a whole round: fit -> lnl report -> corrected labels (names) -> fit, and
predictions carrying names."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from helpers.digits_folder import NAMES, read_labels, write_digits_folder
from helpers.paths import CONFIGS
from lnl.run.main import main

CONFIG = str(CONFIGS / "own_data.yaml")
FAST = ["--trainer.max_epochs=5", "--model.init_args.selection.warmup_epochs=1",
        "--model.init_args.selection.schedule_epochs=1", "--trainer.enable_model_summary=false",
        "--data.num_workers=0", "--data.folder.image_size=16"]  # fmt: skip


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_class_name_labels_round_trip_through_fit_report_corrected_labels_and_fit(in_tmp: Path) -> None:
    folder = write_digits_folder(in_tmp / "pets", 100, noise=0.2, names=True, classes=4)
    names = sorted(NAMES[:4])
    assert main(["fit", "--config", CONFIG, "--data.root", "pets", *FAST]) == 0
    run = Path("runs/own_data/version_0")
    assert rows(run / "classes.csv") == [{"id": str(i), "name": n} for i, n in enumerate(names)]

    given = read_labels(folder.root / "train.csv")
    report = rows(run / "label_report.csv")
    assert len(report) == 100
    for r in report:
        rel = os.path.relpath(r["path"], folder.root)
        assert r["given_name"] == given[rel] == names[int(r["given_label"])]
        assert r["predicted_name"] == names[int(r["predicted_label"])]
        assert r["corrected_name"] == names[int(r["corrected_label"])] and r["true_name"] == ""
    original = (run / "label_report.csv").read_bytes()
    results = json.loads((run / "results.json").read_text())
    assert main(["report", results["best_checkpoint"], "--out", "again"]) == 0
    assert Path("again/label_report.csv").read_bytes() == original
    assert (run / "label_report.csv").read_bytes() == original

    corrected = read_labels(run / "corrected_labels.csv")  # names in, names out
    by_path = {os.path.relpath(r["path"], folder.root): r["corrected_name"] for r in report}
    assert corrected == by_path and set(corrected.values()) <= set(names)

    args = ["fit", "--config", CONFIG, "--data.root", "pets", *FAST,
            "--data.folder.train_csv", str(run / "corrected_labels.csv")]  # fmt: skip
    assert main(args) == 0
    again = Path("runs/own_data/version_1")
    assert (again / "classes.csv").read_bytes() == (run / "classes.csv").read_bytes()
    second = {os.path.relpath(r["path"], folder.root): r["given_name"]
              for r in rows(again / "label_report.csv")}  # fmt: skip
    assert second == corrected  # the second fit learns from exactly the corrected labels

    predict = ["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints/last.ckpt"),
               "--data.predict_on", "train"]  # fmt: skip
    assert main(predict) == 0
    predictions = rows(run / "predictions.csv")
    assert len(predictions) == 100
    assert all(p["given_name"] == names[int(p["given_label"])] for p in predictions)
    assert all(p["predicted_name"] == names[int(p["predicted_label"])] == p["top1_name"] for p in predictions)
