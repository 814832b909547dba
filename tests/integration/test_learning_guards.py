"""One-seed regression guards on Digits: DML beats CE, EMLC / MW-Net / L2RW stay within a margin of CE.

The README's tables (seeds 0-4, 30 epochs, mean ± std, paired differences) are the claims; these guards only
catch a regression. Each compares `test/acc_best_val` of one seed (0) with CE on the same labels and split,
15 epochs with the learning rate divided by 10 after epoch 10 (DML: warm-up 2, schedule 5 epochs). Measured
on seed 0 (the margins leave room for platform drift, not for a method that stops working):

| setting | CE | method | difference | guard |
|---|---|---|---|---|
| 40% pairflip, noisy validation | 0.650 | DML 0.847 | +0.197 | ≥ +0.10 |
| 40% uniform, 10 clean per class | 0.936 | EMLC 0.881 | −0.055 | ≥ −0.08 |
| 60% uniform, 10 clean per class | 0.906 | MW-Net 0.928 | +0.022 | ≥ −0.05 |
| 60% uniform, 10 clean per class | 0.906 | L2RW 0.925 | +0.019 | ≥ −0.05 |
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.paths import CONFIGS
from lnl.run.main import main

SHORT = ["--trainer.max_epochs=15", "--model.init_args.scheduler.init_args.milestones=[10]",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]  # fmt: skip
CLEAN = ["--data.init_args.clean_per_class=10", "--data.init_args.val_per_class=10",
         "--data.init_args.val_labels=clean", "--data.init_args.batch_size=64"]  # fmt: skip
PAIRFLIP40 = ["--data.init_args.noise={kind: pairflip, rate: 0.4, count: exact}"]
UNIFORM40 = ["--data.init_args.noise={kind: uniform, rate: 0.4, count: exact}"]
UNIFORM60 = ["--data.init_args.noise={kind: uniform, rate: 0.6, count: exact}"]


def accuracy(config: str, *extra: str) -> tuple[float, str]:
    """Fit `config` on seed 0 with the short schedule; (test/acc_best_val, labels_sha256)."""
    assert main(["fit", "--config", str(CONFIGS / config), *SHORT, *extra]) == 0
    latest = max(Path("runs").glob("*/version_*/results.json"), key=lambda p: p.stat().st_mtime)
    results = json.loads(latest.read_text())
    return results["test/acc_best_val"], results["labels_sha256"]


@pytest.mark.slow
def test_dml_beats_ce_on_pairflip_noise() -> None:
    ce, ce_labels = accuracy("quickstart_ce.yaml", *PAIRFLIP40)
    dml, dml_labels = accuracy("quickstart.yaml", *PAIRFLIP40, "--model.init_args.selection.schedule_epochs=5",
                               "--model.init_args.teacher_scheduler.init_args.milestones=[10]")  # fmt: skip
    assert dml_labels == ce_labels
    assert dml - ce >= 0.10, (dml, ce)


@pytest.mark.slow
def test_emlc_stays_within_a_margin_of_ce() -> None:
    ce, ce_labels = accuracy("quickstart_ce.yaml", *CLEAN, *UNIFORM40)
    emlc, emlc_labels = accuracy("emlc_digits_unif40_k5.yaml")
    assert emlc_labels == ce_labels
    # Seed 0 measured 0.881 vs CE 0.936 with the official k-step row mean (0.919 with the earlier `sum`); over seeds
    # 0-4 at 30 epochs EMLC − CE is −0.015 ± 0.018 (SE), worst seed −0.064 (README). A broken meta-gradient or no
    # learning lands far lower (no-learning mutant: 0.10).
    assert emlc >= ce - 0.08, (emlc, ce)


@pytest.mark.slow
def test_mwnet_and_l2rw_stay_within_a_margin_of_ce() -> None:
    ce, ce_labels = accuracy("quickstart_ce.yaml", *CLEAN, *UNIFORM60)
    for config, margin in (("mwnet_digits_unif60.yaml", 0.05), ("l2rw_digits_unif60.yaml", 0.05)):
        acc, labels = accuracy(config)
        assert labels == ce_labels, config
        assert acc >= ce - margin, (config, acc, ce)
