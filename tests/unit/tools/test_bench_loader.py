"""`python -m lnl.tools.bench_loader` on a few small JPEGs: per-image costs, images/s per worker count, JSON report."""

from __future__ import annotations

import json
import math
from pathlib import Path

from lnl.tools.bench_loader import main


def test_loader_bench_reports_per_image_costs_and_throughput_per_worker_count(tmp_path: Path, capsys) -> None:
    out = tmp_path / "loader.json"
    args = ["--images", "12", "--size", "64", "--crop", "56", "--workers", "0,1", "--batch-size", "4",
            "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "images/s" in capsys.readouterr().out
    report = json.loads(out.read_text())
    p = report["per_image"]
    assert 0 < p["decode_us"] < p["decode_augment_us"] and 0 < p["seeding_us"] < p["decode_augment_us"]
    assert math.isclose(
        p["seeding_pct_of_decode_augment"], 100 * p["seeding_us"] / p["decode_augment_us"], rel_tol=0.05
    )
    assert [t["workers"] for t in report["throughput"]] == [0, 1]
    for t in report["throughput"]:
        assert t["images"] == 12 and t["images_per_s"] > 0 and t["images_per_s_per_worker"] > 0
