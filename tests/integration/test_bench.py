"""`python -m lnl.tools.bench` prints a table and writes the JSON report (docs/design.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lnl.tools.bench import main, parse_args, run_variant


@pytest.mark.slow
def test_bench_ce_and_the_plain_loop_print_a_table_and_write_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["--methods", "ce", "--device", "cpu", "--backbone", "tiny_cnn", "--batch-size", "8", "--warmup", "1",
            "--steps", "3", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "ms mean" in table and "x plain" in table and "\nplain  loop" in table
    report = json.loads(out.read_text())
    assert {"device", "backbone", "batch_size", "precision", "results"} <= set(report)
    ce, plain = report["results"]
    assert ce["method"] == "ce" and ce["ratio_vs_ce"] == 1.0 and ce["ratio_vs_plain"] > 0
    assert plain["method"] == "plain" and plain["ratio_vs_plain"] == 1.0
    assert ce["ratio_vs_plain"] == pytest.approx(ce["ms_mean"] / plain["ms_mean"], rel=1e-2)
    for row in (ce, plain):
        assert 0 < row["ms_min"] <= row["ms_median"] <= row["ms_max"] and row["peak_mem_mb"] >= 0


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_the_plain_loop_trains_ces_network_in_the_asked_precision(precision: str) -> None:
    """The plain row runs CE's network in fp32 and under bf16 autocast on the CPU and reports its step times."""
    args = parse_args(["--device", "cpu", "--backbone", "tiny_cnn", "--batch-size", "8", "--warmup", "1",
                       "--steps", "4", "--threads", "1", "--precision", precision])  # fmt: skip
    row = run_variant("plain", "loop", args, isolated=False)
    assert (row.method, row.variant) == ("plain", "loop")
    assert 0 < row.ms_min <= row.ms_median <= row.ms_max and row.cpu_ms_mean > 0
