"""Bad input, resume in place, evaluation runs (docs/design.md, "Runs, resume and faults").

Every bad input of the issue's table ends with exactly one `lnl: error:` line naming the bad value, exit code 2,
no traceback or usage text, and no new file under `runs/`.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from helpers.paths import CONFIGS, ROOT
from lnl.run.main import main

QUICK = [
    "--config",
    str(CONFIGS / "quickstart_ce.yaml"),
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=1",
]


def listing(root: Path = Path("runs")) -> list[str]:
    return sorted(str(p) for p in root.rglob("*")) if root.exists() else []


def short_fit(name: str = "first", epochs: int = 1) -> Path:
    """A 1-epoch, 3-step fit; returns its last.ckpt."""
    args = ["fit", *QUICK, f"--trainer.max_epochs={epochs}", f"--trainer.logger.init_args.name={name}"]
    assert main(args) == 0
    return Path("runs") / name / "version_0" / "checkpoints" / "last.ckpt"


def truncated() -> list[str]:
    ckpt = short_fit()
    data = ckpt.read_bytes()
    Path("trunc.ckpt").write_bytes(data[: len(data) // 2])
    return ["--ckpt_path=trunc.ckpt"]


def typo_in_noise() -> list[str]:
    Path("typo.yaml").write_text("data:\n  init_args:\n    noise: {kind: symmetric, rat: 0.4}\n")
    return ["--config", "typo.yaml"]


def invalid_yaml() -> list[str]:
    Path("broken.yaml").write_text("trainer:\n  max_epochs: [1\n  devices: 1\n")
    return ["--config", "broken.yaml"]


def unwritable() -> list[str]:
    Path("afile").write_text("")
    return ["--trainer.logger.init_args.save_dir=afile/runs"]


def changed_noise_rate() -> list[str]:
    args = [f"--ckpt_path={short_fit()}", "--data.init_args.noise.rate=0.3", "--trainer.max_epochs=2"]
    return [*args, "--resume_other_run=true"]  # refused even so: another label set


TABLE: list[tuple[str, Callable[[], list[str]], str]] = [
    ("missing_ckpt", lambda: ["--ckpt_path=missing.ckpt"], "'missing.ckpt': no such file"),
    ("truncated_ckpt", truncated, "'trunc.ckpt': not a readable checkpoint"),
    ("unwritable_save_dir", unwritable, "'afile/runs'"),
    ("typo_in_noise", typo_in_noise, "'data.init_args.noise.rat' (allowed: kind, rate,"),
    (
        "unknown_data_key",
        lambda: ["--data.init_args.test_csv=x"],
        "'data.init_args.test_csv' (allowed: dataset,",
    ),
    ("invalid_yaml", invalid_yaml, "broken.yaml, line 3"),
    ("max_epochs_0", lambda: ["--trainer.max_epochs=0"], "trainer.max_epochs = 0"),
    ("changed_noise_rate", changed_noise_rate, "data.noise.rate = 0.3 differs from the checkpoint's 0.4"),
    (
        "lightning_misconfiguration",
        lambda: ["--last_checkpoint.every_n_train_steps=3", "--last_checkpoint.every_n_epochs=1"],
        "every_n_train_steps=3",
    ),
]


@pytest.mark.parametrize(("make", "needle"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_bad_input_is_one_line_and_leaves_nothing_behind(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], make: Callable[[], list[str]], needle: str
) -> None:
    extra = make()
    before = listing()
    capsys.readouterr()
    code = main(["fit", *QUICK, *extra])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("lnl: error:") and needle in lines[0], err
    assert "Traceback" not in err and "usage:" not in err
    assert listing() == before


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--trainer.max_epochs=0"], "max_epochs = 0"), (["--trainer.default_root_dir=afile/x"], "afile")],
)
def test_console_script_prints_one_stderr_line(in_tmp: Path, extra: list[str], needle: str) -> None:
    Path("afile").write_text("")
    root = ROOT
    env = os.environ | {"PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-m", "lnl", "fit", *QUICK, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("lnl: error:") and needle in lines[0]
    assert not Path("runs").exists() and not Path("afile").is_dir()


def test_debug_flag_shows_the_traceback(in_tmp: Path) -> None:
    with pytest.raises(Exception, match="max_epochs = 0"):
        main(["fit", *QUICK, "--trainer.max_epochs=0", "--debug"])


def test_default_root_dir_is_honoured(in_tmp: Path) -> None:
    assert main(["fit", *QUICK, "--trainer.max_epochs=1", "--trainer.default_root_dir=elsewhere"]) == 0
    assert (Path("elsewhere") / "quickstart_ce" / "version_0" / "results.json").exists()
    assert not Path("runs").exists()


def _results(path: Path) -> dict:
    results = json.loads((path / "results.json").read_text())
    return results | {"best_checkpoint": Path(results["best_checkpoint"]).name}


@pytest.mark.slow
def test_resume_continues_in_the_same_run_directory(in_tmp: Path) -> None:
    uninterrupted = short_fit("whole", epochs=3).parents[1]
    ckpt = short_fit("cut", epochs=1)
    (ckpt.parents[1] / "results.json").unlink()  # as if killed before its end (a finished run is not resumed)
    assert main(["fit", *QUICK, "--trainer.max_epochs=3", f"--ckpt_path={ckpt}"]) == 0
    run = ckpt.parents[1]
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    assert _results(run) == _results(
        uninterrupted
    )  # best-val tracking restored: same best checkpoint and score
    assert (run / "metrics.csv").read_text() == (uninterrupted / "metrics.csv").read_text()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
        p.name for p in (uninterrupted / "checkpoints").iterdir()
    )


@pytest.mark.slow
def test_evaluation_writes_into_the_checkpoints_run_and_names_it(in_tmp: Path) -> None:
    ckpt = short_fit(epochs=2)
    run = ckpt.parents[1]
    with open(run / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert {"test/acc_last", "test/acc_best_val"} <= set(header) and "test/acc" not in header
    for stage in ("test", "validate", "predict"):
        assert main([stage, *QUICK, f"--ckpt_path={ckpt}"]) == 0
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["predict_last", "test_last", "validate_last"]
    assert "test/acc_last" in (run / "eval" / "test_last" / "metrics.csv").read_text()
    assert "val/acc_last" in (run / "eval" / "validate_last" / "metrics.csv").read_text()
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["NoisyLabelDataModule"]["settings"]["noise.rate"] == 0.4


@pytest.mark.parametrize("method", ["CE", "DML"])
def test_nan_batch_stops_the_run_naming_step_and_term(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], method: str
) -> None:
    config = "quickstart_ce.yaml" if method == "CE" else "quickstart.yaml"
    args = ["fit", *QUICK, "--config", str(CONFIGS / config), "--trainer.max_epochs=1"]
    args += ["--trainer.callbacks+=helpers.faults.NanAtBatch", "--trainer.callbacks.init_args.batch=1"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    step = 1 if method == "CE" else 2  # a DML batch steps two optimizers
    assert len(err) == 1 and err[0].startswith(f"lnl: error: non-finite input batch at step {step}"), err


@pytest.mark.parametrize("method", ["CE", "DML"])
def test_nan_batch_is_skipped_and_counted(in_tmp: Path, method: str) -> None:
    config = "quickstart_ce.yaml" if method == "CE" else "quickstart.yaml"
    name = f"nan_{method}"
    args = ["fit", *QUICK, "--config", str(CONFIGS / config), "--trainer.max_epochs=1"]
    args += ["--trainer.callbacks+=helpers.faults.NanAtBatch", "--trainer.callbacks.init_args.batch=1"]
    args += ["--model.init_args.on_nonfinite=skip", f"--trainer.logger.init_args.name={name}"]
    assert main(args) == 0
    run = Path("runs") / name / "version_0"
    results = json.loads((run / "results.json").read_text())
    assert results["train/skipped_nonfinite"] == 1
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_nan_loss_is_raised_or_skipped(in_tmp: Path, capsys: pytest.CaptureFixture[str], policy: str) -> None:
    args = ["fit", *QUICK, "--trainer.max_epochs=1", f"--model.init_args.on_nonfinite={policy}"]
    args += ["--trainer.callbacks+=helpers.faults.NanLossAtBatch", "--trainer.callbacks.init_args.batch=2"]
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    if policy == "raise":
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith("lnl: error: non-finite CE loss at step 2"), err
    else:
        assert code == 0
        results = json.loads((Path("runs/quickstart_ce/version_0") / "results.json").read_text())
        assert results["train/skipped_nonfinite"] == 1
