"""`python -m lnl.bench` prints a table and writes the JSON report (docs/design.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lnl.bench import main


@pytest.mark.slow
def test_bench_ce_prints_a_table_and_writes_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["--methods", "ce", "--device", "cpu", "--backbone", "tiny_cnn", "--batch-size", "8", "--warmup", "1",
            "--steps", "3", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "ms mean" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert {"device", "backbone", "batch_size", "precision", "results"} <= set(report)
    (row,) = report["results"]
    assert row["method"] == "ce" and row["ratio_vs_ce"] == 1.0
    assert 0 < row["ms_min"] <= row["ms_median"] <= row["ms_max"] and row["peak_mem_mb"] >= 0
