"""What a run prints: one line per epoch in a log file, no advertising tips, a `--help` that points onwards."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers.paths import CONFIGS
from lnl.run.main import main


@pytest.mark.slow
def test_a_logged_run_prints_one_line_per_epoch_and_no_tips() -> None:
    args = [sys.executable, "-m", "lnl", "fit", "--config", str(CONFIGS / "quickstart_ce.yaml"),
            "--trainer.max_epochs=2", "--trainer.limit_train_batches=3"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    log = done.stdout + done.stderr
    epochs = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(" | ")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert "val/acc" in epochs[0]
    assert "\r" not in log and "Tip:" not in log
    assert max(len(line) for line in log.splitlines()) < 400
    assert "label report:" in done.stdout


def test_fit_help_points_to_model_data_and_noise_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    tail = out[out.index("Where to look next") :]
    for pointer in ("--model.help DML", "--data.help NoisyLabelDataModule", "data.noise", "folder_csv"):
        assert pointer in tail
