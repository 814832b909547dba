"""A stage without progress leaves every thread's stack in `<run_dir>/stacks.txt` and one log line (lnl/run/watchdog.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.paths import ROOT
from lnl.run.watchdog import StallWatchdog, beat


def waiting_for_a_batch(seconds: float) -> None:
    time.sleep(seconds)


def test_a_stall_writes_every_threads_stack_and_progress_keeps_it_quiet(tmp_path: Path) -> None:
    watchdog = StallWatchdog(timeout_s=0.5)
    path = tmp_path / "run" / "stacks.txt"
    watchdog.start(str(path), "fit: train")
    try:
        for _ in range(8):  # progress every 0.2 s: no dump
            time.sleep(0.2)
            beat("fit: train")
        assert path.read_text() == ""
        waiting_for_a_batch(1.2)  # no progress for longer than the limit
    finally:
        watchdog.stop()
    stacks = path.read_text()
    assert "Timeout (0:00:00.500000)!" in stacks and "waiting_for_a_batch" in stacks


def test_no_stall_leaves_no_file(tmp_path: Path) -> None:
    watchdog = StallWatchdog(timeout_s=5)
    path = tmp_path / "stacks.txt"
    watchdog.start(str(path), "fit: train")
    beat("fit: validate")
    watchdog.stop()
    assert not path.exists()


def test_a_negative_timeout_is_a_config_error() -> None:
    from lnl.errors import ConfigError

    with pytest.raises(ConfigError, match="watchdog.timeout_s = -1"):
        StallWatchdog(timeout_s=-1)


@pytest.mark.slow  # one tiny `lnl fit` subprocess (~10 s on a shared 2-core machine)
def test_a_hang_in_the_end_of_fit_test_is_named_in_stacks_txt_and_the_log(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    cmd = [sys.executable, "-m", "lnl", "fit", "--config", str(ROOT / "configs" / "quickstart_ce.yaml"),
           "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
           "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
           "--watchdog.timeout_s=1", "--trainer.callbacks+=helpers.faults.HangInTest",
           "--trainer.callbacks.init_args.seconds=3"]  # fmt: skip
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "quickstart_ce" / "version_0"
    stacks = (run / "stacks.txt").read_text()
    assert "stuck_in_the_test_loop" in stacks and "on_test_batch_start" in stacks
    assert "lnl: no progress in stage 'test: test' for 1 s: every thread's stack is in" in out.stderr
    assert (run / "results.json").is_file()  # the stall ended and the run finished


@pytest.mark.slow  # a Python subprocess importing Lightning
def test_an_exit_handler_that_hangs_is_named_in_stacks_txt(tmp_path: Path) -> None:
    """Exit handlers registered before a trainer's setup (Lightning's, e.g. destroying the process group) run
    watched after the command returned and stopped its watchdog."""
    script = tmp_path / "exit_hang.py"
    script.write_text(
        "import atexit, time\nimport lnl.run.watchdog as w\n\n"
        "def destroying_the_process_group():\n    time.sleep(2.5)\n\n"
        "atexit.register(destroying_the_process_group)\n"
        "watchdog = w.StallWatchdog(timeout_s=1)\n"
        "watchdog.setup(type('T', (), {'log_dir': 'run', 'global_rank': 0})(), None, 'fit')\n"
        "w.stop()\n"
    )
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "destroying_the_process_group" in (tmp_path / "run" / "stacks.txt").read_text()
    assert "lnl: no progress in stage 'exit'" in out.stderr
