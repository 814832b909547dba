"""`python -m lnl.gpu_check --cpu-fallback` (what `make gpu-check` runs without a GPU): same code paths, tiny sizes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lnl.bench import variants
from lnl.gpu_check import CPU, METHODS, SETTINGS, fit_steps, main


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
