"""The paper-protocol number (best test accuracy over evaluations) is logged beside lnl's and never selects."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from helpers.paths import CONFIGS
from lnl.run.main import main
from lnl.run.paper_protocol import EPOCH_KEY, KEY

ARGS = [
    "fit",
    "--config",
    str(CONFIGS / "quickstart_ce.yaml"),
    "--trainer.max_epochs=4",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
CALLBACK = '--trainer.callbacks=[{"class_path": "lnl.run.paper_protocol.BestTestAccuracy"}]'


@pytest.mark.usefixtures("in_tmp", "one_thread")
def test_best_test_over_epochs_is_logged_and_selection_is_unchanged() -> None:
    assert main(ARGS) == 0
    assert main([*ARGS, CALLBACK]) == 0
    plain, paper = (
        json.loads(Path(f"runs/quickstart_ce/version_{v}/results.json").read_text()) for v in (0, 1)
    )
    assert KEY not in plain
    for key in ("test/acc_best_val", "val/acc_best", "test/acc_last"):  # the honest numbers do not move
        assert paper[key] == plain[key]
    assert Path(paper["best_checkpoint"]).name == Path(plain["best_checkpoint"]).name
    with open("runs/quickstart_ce/version_1/metrics.csv") as f:
        per_epoch = [float(r[EPOCH_KEY]) for r in csv.DictReader(f) if r.get(EPOCH_KEY)]
    assert len(per_epoch) == 4
    assert paper[KEY] == pytest.approx(max(per_epoch))
    assert per_epoch[-1] == pytest.approx(paper["test/acc_last"])  # the last evaluation: the final weights
