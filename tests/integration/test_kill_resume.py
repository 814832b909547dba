"""Kill test: `lnl fit` killed with SIGKILL mid-epoch (once during a checkpoint write), then resumed from
`last.ckpt`, ends bit-exact with an uninterrupted run, with the same results.json (docs/design.md, "Runs, resume
and faults")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.paths import ROOT
from lnl.run.main import main

CONFIGS = ROOT / "configs"
SETTINGS = {
    # config, extra args, steps per epoch (global steps: a DML batch steps two optimizers)
    "CE": (
        "quickstart_ce.yaml",
        ["--trainer.limit_train_batches=10", "--last_checkpoint.every_n_steps=3"],
        10,
    ),
    "DML": ("quickstart.yaml", ["--trainer.limit_train_batches=6", "--last_checkpoint.every_n_steps=4"], 12),
}


def fit_args(method: str, name: str) -> list[str]:
    config, extra, _ = SETTINGS[method]
    return [
        "fit",
        "--config",
        str(CONFIGS / config),
        "--trainer.max_epochs=2",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.name={name}",
        *extra,
    ]


def spawn(args: list[str]) -> subprocess.Popen:
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "lnl", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def results(run: Path) -> dict:
    out = json.loads((run / "results.json").read_text())
    return out | {"best_checkpoint": Path(out["best_checkpoint"]).name}


def params(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def start_kill(method: str, name: str, how: str, step: int) -> subprocess.Popen:
    """`lnl fit` that dies by SIGKILL at global step `step` ("step"), or is killed by this test while it writes
    the checkpoint of the first step-checkpoint at or after `step` ("write")."""
    helper = "KillAtStep" if how == "step" else "SlowCheckpointWrite"
    args = [*fit_args(method, name), f"--trainer.callbacks+=helpers.faults.{helper}"]
    return spawn([*args, f"--trainer.callbacks.init_args.step={step}"])


def wait_killed(proc: subprocess.Popen, name: str, how: str) -> None:
    if how == "write":  # kill from outside while the (slowed) write is in progress
        tmp = Path("runs") / name / "version_0" / "checkpoints" / "last.ckpt.tmp"
        slow = tmp.with_name(
            tmp.name + ".slow"
        )  # only the slowed write makes it (a normal write's .tmp is brief)
        deadline = time.monotonic() + 120
        while not slow.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert tmp.exists()
    assert proc.wait(timeout=120) == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "kills"),
    [("CE", [("step", 5), ("step", 14), ("write", 16)]), ("DML", [("step", 10)])],
)
def test_killed_and_resumed_run_equals_the_uninterrupted_one(
    in_tmp: Path, method: str, kills: list[tuple[str, int]]
) -> None:
    started = time.monotonic()
    procs = [start_kill(method, f"cut{i}", how, step) for i, (how, step) in enumerate(kills)]
    assert main(fit_args(method, "whole")) == 0
    whole = Path("runs") / "whole" / "version_0"
    for i, (proc, (how, _)) in enumerate(zip(procs, kills)):
        wait_killed(proc, f"cut{i}", how)
    per_epoch = SETTINGS[method][2]
    for i, (how, step) in enumerate(kills):
        run = Path("runs") / f"cut{i}" / "version_0"
        ckpt = run / "checkpoints" / "last.ckpt"
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        assert 0 < saved["global_step"] <= step and saved["global_step"] % per_epoch != 0, (how, step)
        assert main([*fit_args(method, f"cut{i}"), f"--ckpt_path={ckpt}"]) == 0
        assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
        assert results(run) == results(whole), (how, step)
        if (
            method == "CE"
        ):  # DML's epoch means of the interrupted epoch cover the batches after the resume only
            assert (run / "metrics.csv").read_text() == (whole / "metrics.csv").read_text(), (how, step)
        resumed, reference = params(run), params(whole)
        assert resumed.keys() == reference.keys()
        for key, value in reference.items():
            torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=f"{key} after {how} {step}")
    print(f"{method}: killed at {kills}, {time.monotonic() - started:.1f} s")
