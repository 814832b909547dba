"""`python -m lnl.tools.gpu_check --cpu-fallback` (what `make gpu-check` runs without a GPU): same code paths, tiny sizes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from helpers.paths import CONFIGS
from lnl.tools.gpu_check import CPU, FITS, main
from lnl.tools.gpu_fits import FitRun, paper_schedule, run_with_stack_dump, sm_busy
from lnl.tools.gpu_probe import ProbeRecord
from lnl.tools.gpu_report import GpuCheckReport, verdicts


@pytest.mark.slow  # two tiny `lnl fit` subprocesses and four tiny benches: ~1-2 min on a shared 2-core machine
def test_cpu_fallback_runs_a_ddp_fit_with_workers_a_ce_fit_and_the_plain_loop_bench(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "gpu_check"
    assert main(["--cpu-fallback", "--out", str(out), "--fits", "dml_ddp,ce"]) == 0
    assert "## Acceptance (issue 19)" in capsys.readouterr().out
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["cpu_fallback"] and report["ran_ok"] and (out / "gpu_check.md").is_file()
    assert [f["name"] for f in report["fits"]] == ["ce", "dml_ddp"]  # in the order of FITS
    for fit in report["fits"]:
        assert fit["exit_code"] == 0 and fit["results_json"], Path(fit["log"]).read_text()[-3000:]
        probe = fit["probe"]
        assert (
            probe["batches"] == CPU.max_steps
            and probe["steps_per_s"] > 0
            and probe["precision"] == "bf16-mixed"
        )
        assert fit["wall_s"] >= probe["train_s"] > 0 and fit["after_training_s"] > 0
        assert fit["paper_steps"] > 0 and fit["paper_hours"] > 0
    assert (
        report["fits"][1]["probe"]["strategy"] == "CurrentStreamDDPStrategy"
    )  # DDP on one device, 2 workers
    profile = report["fits"][0]["probe"]["profile"]  # CE is profiled (one step on the CPU)
    assert profile["steps"] == 1 and profile["wall_ms"] > 0 and (out / "probe_ce.profile.txt").is_file()
    assert {(b["backbone"], b["name"]) for b in report["benches"]} == {
        ("tiny_cnn", "fp32"),
        ("tiny_cnn", "bf16"),
    }
    for bench in report["benches"]:
        assert [r["method"] for r in bench["results"]] == ["ce", "plain"] and bench["error"] is None
        assert bench["results"][0]["ratio_vs_plain"] > 0
    assert {v["status"] for v in report["verdicts"]} <= {"PASS", "n/a (CPU)"}


def test_every_fit_of_the_check_names_an_existing_config_and_a_paper_schedule() -> None:
    assert {s.name for s in FITS} >= {"dml", "ce", "emlc", "mwnet", "simclr", "dml_ddp"}
    assert paper_schedule(CONFIGS / "dml_cifar10_sym40.yaml") == (300, 300 * (49_000 // 128))
    assert paper_schedule(CONFIGS / "emlc_cifar10_unif50.yaml") == (15, 15 * (48_000 // 128))


def test_sm_busy_keeps_samples_inside_training_and_outside_validation() -> None:
    probe = ProbeRecord(train_start_at=100.0, train_end_at=120.0, val_windows=[(110.0, 112.0)])
    samples = [(t, float(t)) for t in range(95, 125)]
    kept = sm_busy(samples, probe)
    assert kept == [103.0, 104.0, 105.0, 106.0, 107.0, 108.0, 114.0, 115.0, 116.0, 117.0, 118.0, 119.0, 120.0]


def test_verdicts_apply_issue_19s_thresholds_on_a_gpu() -> None:
    def fit(name: str, steps_per_s: float, busy: float, after: float) -> FitRun:
        run = FitRun(
            name, "x.yaml", [], exit_code=0, results_json=True, after_training_s=after, sm_busy_median=busy
        )
        run.probe = ProbeRecord(batches=10, steps_per_s=steps_per_s)
        return run

    report = GpuCheckReport("cuda", "H200", False, "2.11")
    report.fits = [fit("dml", 12.5, 84.0, 31.0), fit("ce", 40.0, 90.0, 12.0)]
    got = {v.check: v.status for v in verdicts(report)}
    assert got["dml: training steps/s (bf16-mixed)"] == "PASS"
    assert (
        got["dml: SM busy, median of 1 s samples"] == "FAIL"
        and got["ce: SM busy, median of 1 s samples"] == "PASS"
    )
    assert got["dml: wall - training"] == "FAIL" and "ce: wall - training" not in got  # CE is not in the list
    assert got["dml: exit 0 + results.json"] == got["ce: exit 0 + results.json"] == "PASS"


def test_a_fit_past_its_time_limit_leaves_every_threads_stack_in_its_log(tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text(
        "import time\n\ndef waiting_for_a_batch():\n    time.sleep(60)\n\nwaiting_for_a_batch()\n"
    )
    log_path = tmp_path / "fit.log"
    with open(log_path, "w") as log:
        code = run_with_stack_dump(
            [sys.executable, str(script)], log, dict(os.environ), tmp_path, timeout_s=3
        )
    log_text = log_path.read_text()
    assert code == 124
    assert "Fatal Python error: Aborted" in log_text and "waiting_for_a_batch" in log_text
