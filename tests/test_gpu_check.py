"""`python -m lnl.gpu_check --cpu-fallback` (what `make gpu-check` runs without a GPU): same code paths, tiny sizes."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

from lnl.bench import variants
from lnl.gpu_check import CPU, METHODS, SETTINGS, fit_steps, main, run_with_stack_dump


@pytest.mark.slow  # ~30-45 s on 2 cores: `make test` (CI) runs it, `make test-fast` does not
def test_cpu_fallback_benches_every_method_and_setting_and_runs_both_fits(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gpu_check"
    assert main(["--cpu-fallback", "--out", str(out)]) == 0
    assert "# lnl gpu-check" in capsys.readouterr().out
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["cpu_fallback"] and report["ok"] and (out / "gpu_check.md").is_file()
    expected = {"all": {(m, v) for m in METHODS for v in variants(m)}, "emlc": {("ce", "default")}}
    expected["emlc"] |= {("emlc", v) for v in variants("emlc")}
    seen = {(s["suite"], s["name"], s["precision"], s["channels_last"]) for s in report["benches"]}
    assert seen == {(suite, *setting) for suite in expected for setting in SETTINGS}
    for section in report["benches"]:
        assert section["error"] is None
        assert {(r["method"], r["variant"]) for r in section["results"]} == expected[section["suite"]]
        for r in section["results"]:
            for key in ("ms_mean", "ms_median", "ms_min", "cpu_ms_mean", "ratio_vs_ce"):
                assert math.isfinite(r[key]) and r[key] > 0, (section["name"], r)
            assert r["peak_mem_mb"] >= 0
    assert [f["method"] for f in report["fits"]] == ["dml", "emlc", "simclr"]
    for fit in report["fits"]:
        assert fit["exit_code"] == 0, Path(fit["log"]).read_text()[-3000:]
        steps = fit_steps(fit["method"], CPU)
        assert fit["batches"] == steps and fit["global_step"] >= steps
        assert (
            fit["strategy"] == "DDPStrategy" and fit["world_size"] == 1 and fit["precision"] == "bf16-mixed"
        )
        assert fit["steps_per_s"] > 0 and "--trainer.strategy=ddp" in fit["command"]


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
