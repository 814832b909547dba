"""The CLI never overwrites a run by mistake, refuses every bad value in one line before a run directory exists,
and answers `lnl --help` / `--version` without importing torch (docs/design.md, "Runs, resume and faults")."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import ROOT
from lnl.run.main import COMMANDS
from lnl.run.main import main as lnl

CONFIGS = ROOT / "configs"
CE = ["--config", str(CONFIGS / "quickstart_ce.yaml")]
DML = ["--config", str(CONFIGS / "quickstart.yaml")]
EMLC = ["--config", str(CONFIGS / "emlc_digits_unif40_k5.yaml")]
QUICK = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=1",
]


def one_error_line(capsys: pytest.CaptureFixture[str], code: int) -> str:
    """The single `lnl: error:` line of a refused command (exit 2, no traceback, nothing else on stderr)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("lnl: error: "), err
    assert "Traceback" not in err
    return lines[0]


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


def subprocess_env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_help_names_every_subcommand_without_importing_torch(capsys: pytest.CaptureFixture[str]) -> None:
    probe = (
        "import sys; from lnl.run.main import main; code = main(['--help']); "
        "print('heavy:', sorted(m for m in ('torch', 'lightning', 'jsonargparse') if m in sys.modules)); "
        "sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=subprocess_env(), capture_output=True, text=True)
    assert done.returncode == 0 and "heavy: []" in done.stdout, done.stdout + done.stderr
    listed = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ") and line.split()]
    assert {"fit", "validate", "test", "predict", "report", "aggregate", "runs"} <= set(listed)
    assert set(COMMANDS) == {"fit", "validate", "test", "predict", "report", "aggregate", "runs"}
    assert lnl(["--version"]) == 0 and capsys.readouterr().out.startswith("lnl 0.1.0 (torch ")
    assert "'frobnicate'" in one_error_line(capsys, lnl(["frobnicate"]))


BAD_VALUES = [
    (CE, ["--model.init_args.optimizer.init_args.lr=-0.1"], "optimizer.init_args.lr = -0.1: must be >= 0"),
    (DML, ["--model.init_args.teacher_optimizer.init_args.lr=-1"], "teacher_optimizer.init_args.lr = -1"),
    (CE, ["--model.init_args.optimizer.init_args.momentum=-0.5"], "momentum = -0.5: must be >= 0"),
    (
        CE,
        [
            "--model.init_args.optimizer=torch.optim.Adam",
            "--model.init_args.optimizer.init_args.betas=[1.5,0.9]",
        ],
        "betas = (1.5, 0.9): each must be in [0, 1)",
    ),
    (
        CE,
        [
            "--model.init_args.scheduler=torch.optim.lr_scheduler.OneCycleLR",
            "--model.init_args.scheduler.init_args.max_lr=0.1",
        ],
        "model.init_args.scheduler = torch.optim.lr_scheduler.OneCycleLR: its constructor rejects",
    ),  # fmt: skip
    (CE, ["--data.init_args.num_workers=-1"], "num_workers = -1: must be 0"),
    (
        ["--config", str(CONFIGS / "own_data.yaml")],
        ["--data.root=nowhere", "--data.folder.image_size=0"],
        "folder.image_size = 0: must be a positive number",
    ),
    (EMLC, ["--data.init_args.clean_per_class=0"], "data.clean_per_class = 0: this method needs a clean set"),
]


@pytest.mark.parametrize(("config", "extra", "needle"), BAD_VALUES, ids=lambda v: str(v)[-40:])
def test_bad_values_are_one_line_before_any_run_directory(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], config: list[str], extra: list[str], needle: str
) -> None:
    line = one_error_line(capsys, lnl(["fit", *config, *QUICK, *extra]))
    assert needle in line, line
    assert not Path("runs").exists()


@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_evaluation_without_a_checkpoint_is_refused(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], stage: str
) -> None:
    line = one_error_line(capsys, lnl([stage, *CE]))
    assert f"lnl {stage} needs --ckpt_path" in line
    assert not Path("runs").exists()


@pytest.mark.slow
def test_console_prints_nothing_before_the_error_line(in_tmp: Path) -> None:
    """Refused after seeding and building the model and data: still the only output ("Seed set to" is not)."""
    argv = [sys.executable, "-m", "lnl", "fit", *EMLC, *QUICK, "--data.init_args.clean_per_class=0"]
    done = subprocess.run(argv, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.startswith("lnl: error: data.clean_per_class = 0") and done.stderr.count("\n") == 1
    assert not Path("runs").exists()


@pytest.mark.slow
def test_another_runs_checkpoint_never_changes_that_run(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lnl(["fit", *CE, *QUICK, "--trainer.max_epochs=1"]) == 0
    run = Path("runs/quickstart_ce/version_0")
    ckpt = f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    before = hashes(Path("runs"))
    refused = [
        (["fit", *DML, ckpt], "is a CE checkpoint but the config's model is DML"),
        (["fit", *CE, ckpt, "--data.init_args.dataset=folder_csv"], "trained on dataset 'digits'"),
        (
            ["fit", *CE, ckpt, "--resume_other_run=true", "--data.init_args.noise_seed=1"],
            "noise_seed = 1 differs",
        ),
        (["test", *CE, ckpt, "--data.init_args.noise.rate=0.2"], "data.noise.rate = 0.2 differs"),
        (["fit", *CE, ckpt, "--trainer.max_epochs=5"], "finished run 'runs/quickstart_ce/version_0'"),
        (["fit", *CE, "--trainer.logger.init_args.version=0"], "already holds a run"),
    ]
    capsys.readouterr()
    for argv, needle in refused:
        assert needle in one_error_line(capsys, lnl([*argv, *QUICK])), argv
        assert hashes(Path("runs")) == before, argv  # nothing changed, nothing added
    # resuming it on purpose continues it in a new run directory; the finished run stays byte-identical
    assert lnl(["fit", *CE, *QUICK, ckpt, "--resume_other_run=true", "--trainer.max_epochs=2"]) == 0
    assert {k: v for k, v in hashes(Path("runs")).items() if k in before} == before
    resumed = Path("runs/quickstart_ce/version_1")
    assert (resumed / "results.json").is_file() and (resumed / "checkpoints" / "last.ckpt").is_file()
    rows = (resumed / "metrics.csv").read_text().splitlines()
    assert rows[1].startswith("1,")  # it trained epoch 1 only: epoch 0 came from the checkpoint
    # a second predict never replaces the first one's predictions.csv
    for _ in range(2):
        assert lnl(["predict", *CE, *QUICK, ckpt]) == 0
    first, second = run / "predictions.csv", run / "predictions_1.csv"
    assert first.read_text() == second.read_text() and len(first.read_text().splitlines()) == 361
    for _ in range(2):  # nor does a second test replace the first one's metrics
        assert lnl(["test", *CE, *QUICK, ckpt]) == 0
    assert sorted(p.name for p in (run / "eval").iterdir()) == [
        "predict_last",
        "predict_last_1",
        "test_last",
        "test_last_1",
    ]
    assert {k: v for k, v in hashes(Path("runs")).items() if k in before} == before


HOLD_LOCK = (
    "import sys, time; from pathlib import Path; from lnl.run.run_guard import lock_run_dir; "
    "lock_run_dir(Path(sys.argv[1])); print('locked', flush=True); time.sleep(600)"
)


@pytest.mark.slow
def test_a_second_fit_on_a_run_directory_in_use_is_refused(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another live process holds the run's lock: resuming it in place, or a new run in that directory, is one
    line; once that process is killed (its lock file left behind) the lock is taken over and removed at exit."""
    assert lnl(["fit", *CE, *QUICK, "--trainer.max_epochs=1"]) == 0
    run = Path("runs/quickstart_ce/version_0")
    (run / "results.json").unlink()  # an unfinished run: `--ckpt_path` resumes it in place
    resume = [
        "fit",
        *CE,
        *QUICK,
        "--trainer.max_epochs=2",
        f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
    ]
    holders = [
        subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(d)], env=subprocess_env(), stdout=subprocess.PIPE, text=True
        )  # fmt: skip
        for d in (run, Path("runs/quickstart_ce/version_7"))
    ]
    try:
        assert [h.stdout.readline().strip() for h in holders] == ["locked", "locked"]
        before = hashes(Path("runs"))
        capsys.readouterr()
        line = one_error_line(capsys, lnl(resume))
        assert f"'{run}' is in use by process {holders[0].pid}" in line, line
        line = one_error_line(capsys, lnl(["fit", *CE, *QUICK, "--trainer.logger.init_args.version=7"]))
        assert f"is in use by process {holders[1].pid}" in line, line
        assert hashes(Path("runs")) == before  # nothing changed, nothing added
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    lock = run.parent / ".version_0.lnl.lock"
    assert lock.read_text().strip() == str(holders[0].pid)  # a stale lock: its process is gone
    assert lnl(resume) == 0
    assert (run / "results.json").is_file() and not lock.exists()
    epochs = {row.split(",")[0] for row in (run / "metrics.csv").read_text().splitlines()[1:]}
    assert {"0", "1"} <= epochs  # it trained epoch 1 in place, after the first run's epoch 0
