"""`lnl aggregate`: table numbers against hand-computed ones, CSV, --group-by, reference pairing, one-line errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lnl.run.main import main as cli_main
from lnl.tools import aggregate

CE = {0: 0.80, 1: 0.82, 2: 0.90}  # mean 0.84, sample std sqrt(0.0028) = 0.052915
DML = {
    0: 0.85,
    1: 0.81,
    2: 0.95,
}  # mean 0.87, std sqrt(0.0052) = 0.072111; DML - CE = 0.05, -0.01, 0.05: mean 0.03, std 0.034641, SE 0.02


def make_run(
    root: Path,
    name: str,
    method: str,
    seed: int,
    acc: float,
    *,
    sha: str | None = None,
    tag: str = "sym40_exact",
    rule: str | None = None,
    version: int = 0,
    init_checkpoint: str | None = None,
) -> Path:
    directory = root / name / f"version_{version}"
    directory.mkdir(parents=True)
    results = {
        "test/acc_best_val": acc,
        "test/acc_last": acc - 0.01,
        "val/acc_best": 0.6,
        "noise/realized_rate": 0.4,
        "method": method,
        "dataset": "digits",
        "noise": {"kind": "symmetric", "rate": 0.4, "tag": tag},
        "seed": seed,
        "noise_seed": seed,
        "split_seed": seed,
        "labels_sha256": sha if sha is not None else f"sha{seed}",
        "clean_budget": 0,
    }
    (directory / "results.json").write_text(json.dumps(results))
    init_args: dict = {"backbone": "digits_cnn", "init_checkpoint": init_checkpoint}
    if rule is not None:
        init_args["selection"] = {"rule": rule}
    config = {
        "seed_everything": seed,
        "model": {"class_path": f"lnl.methods.{method}", "init_args": init_args},
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    return directory


@pytest.fixture
def runs(in_tmp: Path) -> Path:
    root = in_tmp / "runs"
    for seed in CE:
        make_run(root, f"ce_s{seed}", "CE", seed, CE[seed])
        make_run(root, f"dml_s{seed}", "DML", seed, DML[seed])
    return root


def table_rows(markdown: str) -> dict[str, list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return {row[0]: row[1:] for row in cells}


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    code = aggregate.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_means_stds_and_paired_difference(runs: Path, capsys) -> None:
    code, out, err = run_main([str(runs), "--reference", "CE/digits/sym40_exact"], capsys)
    assert code == 0 and err == ""
    rows = table_rows(out)
    assert rows["CE/digits/sym40_exact"] == ["3", "0,1,2", "0.8400 ± 0.0529", "(reference)", ""]
    assert rows["DML/digits/sym40_exact"] == ["3", "0,1,2", "0.8700 ± 0.0721", "+0.0300 ± 0.0200", "2/3"]


def test_pure_functions_match_hand_computation(runs: Path) -> None:
    paths = aggregate.find_results([str(runs)])
    groups = aggregate.group_runs([aggregate.load_run(p, []) for p in paths], [])
    ce, dml = groups
    assert ce.name == "CE/digits/sym40_exact" and ce.seeds == [0, 1, 2]
    stat = aggregate.summarize([r.metrics["test/acc_best_val"] for r in ce.runs])
    assert stat.n == 3 and stat.mean == pytest.approx(0.84) and stat.std == pytest.approx(0.0028**0.5)
    paired = aggregate.paired_difference(dml, ce, "test/acc_best_val")
    assert (paired.n, paired.ahead) == (3, 2)
    assert paired.mean == pytest.approx(0.03) and paired.se == pytest.approx(0.02)


def test_out_writes_markdown_and_csv(runs: Path, in_tmp: Path, capsys) -> None:
    argv = ["runs/**/results.json", "--reference", "CE/digits/sym40_exact", "--metric", "test/acc_best_val"]
    argv += ["--metric", "test/acc_last", "--out", "tables/summary"]
    code, out, _ = run_main(argv, capsys)
    assert code == 0
    assert (in_tmp / "tables" / "summary.md").read_text() == out
    assert sorted(p.name for p in (in_tmp / "tables").iterdir()) == [
        "summary.csv",
        "summary.md",
    ]  # no temp left
    with open(in_tmp / "tables" / "summary.csv") as f:
        rows = {row["group"]: row for row in csv.DictReader(f)}
    ce, dml = rows["CE/digits/sym40_exact"], rows["DML/digits/sym40_exact"]
    assert (dml["method"], dml["dataset"], dml["noise"], dml["n"], dml["seeds"]) == (
        "DML",
        "digits",
        "sym40_exact",
        "3",
        "0 1 2",
    )
    assert float(ce["test/acc_best_val_mean"]) == pytest.approx(0.84)
    assert float(ce["test/acc_best_val_std"]) == pytest.approx(0.0028**0.5)
    assert float(ce["test/acc_last_mean"]) == pytest.approx(0.83)
    assert ce["test/acc_best_val_diff_mean"] == "" and ce["test/acc_best_val_paired"] == ""
    assert float(dml["test/acc_best_val_diff_mean"]) == pytest.approx(0.03)
    assert float(dml["test/acc_best_val_diff_se"]) == pytest.approx(0.02)
    assert float(dml["test/acc_last_diff_mean"]) == pytest.approx(0.03)  # acc_last = acc - 0.01 for both
    assert (dml["test/acc_best_val_ahead"], dml["test/acc_best_val_paired"]) == ("2", "3")


def test_group_by_config_key_splits_variants(in_tmp: Path, capsys) -> None:
    root = in_tmp / "runs"
    for seed in CE:
        make_run(root, f"ce_s{seed}", "CE", seed, CE[seed])
        make_run(root, f"est_s{seed}", "DML", seed, DML[seed], rule="estimated")
        make_run(root, f"sch_s{seed}", "DML", seed, DML[seed] + 0.02, rule="schedule")
    # without --group-by the two DML variants would be pooled: refused, naming the key that splits them
    code, _, err = run_main(["runs", "--reference", "CE/digits/sym40_exact"], capsys)
    assert code == 2 and "differ in model.init_args.selection.rule" in err
    assert "--group-by model.init_args.selection.rule" in err and err.count("\n") == 1, err
    argv = ["runs", "--group-by", "model.init_args.selection.rule", "--reference", "CE/digits/sym40_exact"]
    code, out, _ = run_main(argv, capsys)
    assert code == 0
    rows = table_rows(out)
    assert list(rows) == [
        "CE/digits/sym40_exact",
        "DML/digits/sym40_exact/rule=estimated",
        "DML/digits/sym40_exact/rule=schedule",
    ]
    assert rows["DML/digits/sym40_exact/rule=estimated"][2:] == ["0.8700 ± 0.0721", "+0.0300 ± 0.0200", "2/3"]
    assert rows["DML/digits/sym40_exact/rule=schedule"][2:] == ["0.8900 ± 0.0721", "+0.0500 ± 0.0200", "3/3"]


def test_group_by_whether_a_key_is_set_pools_per_seed_paths(in_tmp: Path, capsys) -> None:
    root = in_tmp / "runs"
    for seed in CE:  # one pretrained checkpoint per seed: grouping by the path would split every seed
        make_run(root, f"ce_s{seed}", "CE", seed, CE[seed])
        make_run(root, f"ssl_s{seed}", "CE", seed, DML[seed], init_checkpoint=f"ssl_s{seed}/last.ckpt")
    ref = "CE/digits/sym40_exact/init_checkpoint=None"
    argv = ["runs", "--group-by", "model.init_args.init_checkpoint:set", "--reference", ref]
    code, out, _ = run_main(argv, capsys)
    rows = table_rows(out)
    assert code == 0 and list(rows) == [ref, "CE/digits/sym40_exact/init_checkpoint=set"]
    assert rows["CE/digits/sym40_exact/init_checkpoint=set"][2:] == [
        "0.8700 ± 0.0721",
        "+0.0300 ± 0.0200",
        "2/3",
    ]


def test_reference_pairing_skips_seeds_with_different_labels(in_tmp: Path, capsys) -> None:
    root = in_tmp / "runs"
    for seed in CE:
        make_run(root, f"ce_s{seed}", "CE", seed, CE[seed])
        make_run(root, f"dml_s{seed}", "DML", seed, DML[seed], sha="other" if seed == 2 else None)
    make_run(root, "ce_s7", "CE", 7, 0.5)  # a seed DML lacks
    code, out, _ = run_main(["runs", "--reference", "CE/digits/sym40_exact"], capsys)
    assert code == 0
    # pairs: seeds 0 and 1 only, diffs 0.05 and -0.01: mean 0.02, std 0.042426, SE 0.03
    assert table_rows(out)["DML/digits/sym40_exact"][2:] == ["0.8700 ± 0.0721", "+0.0200 ± 0.0300", "1/2"]
    assert table_rows(out)["CE/digits/sym40_exact"][:2] == ["4", "0,1,2,7"]


def test_pairing_follows_the_training_labels_in_labels_csv(in_tmp: Path, capsys) -> None:
    """EMLC validates on clean labels, CE on noisy ones: same training rows pair, other training rows do not."""
    root = in_tmp / "runs"
    rows = "index,split,true_label,noisy_label\n0,noisy,1,2\n1,noisy,3,3\n"
    for seed in (0, 1):
        for name, method, val in (("ce", "CE", "4,val,5,6"), ("emlc", "EMLC", "4,val,5,5")):
            run = make_run(
                root, f"{name}_s{seed}", method, seed, 0.8 + 0.1 * (method == "EMLC"), sha=f"{name}{seed}"
            )
            train = rows if seed == 0 or method == "CE" else rows.replace("1,noisy,3,3", "1,noisy,3,0")
            (run / "labels.csv").write_text(train + val + "\n")
    code, out, _ = run_main(["runs", "--reference", "CE/digits/sym40_exact"], capsys)
    assert code == 0
    assert table_rows(out)["EMLC/digits/sym40_exact"][-2:] == ["+0.1000", "1/1"]  # seed 0 only


def test_groups_without_shared_seeds_show_no_difference(in_tmp: Path, capsys) -> None:
    root = in_tmp / "runs"
    make_run(root, "ce", "CE", 0, 0.8)
    make_run(root, "dml", "DML", 0, 0.9, tag="idn40", sha="idn")
    code, out, _ = run_main(["runs", "--reference", "CE/digits/sym40_exact"], capsys)
    assert code == 0
    assert table_rows(out)["DML/digits/idn40"] == ["1", "0", "0.9000", "–", "0/0"]


@pytest.mark.parametrize(
    ("argv", "bad"),
    [
        (["missing_dir"], "'missing_dir'"),
        (["runs/*/nothing*"], "'runs/*/nothing*'"),
        (["runs", "--metric", "test/acc_typo"], "'test/acc_typo'"),
        (["runs", "--reference", "XYZ/digits/sym40_exact"], "'XYZ/digits/sym40_exact'"),
        (["runs", "--group-by", "model.init_args.no_such_key"], "'model.init_args.no_such_key'"),
        (["runs", "--group-by", "model.init_args.no_such_key:set"], "'model.init_args.no_such_key:set'"),
        (["runs", "--bogus"], "--bogus"),
        ([], "RUN_DIR"),
    ],
)
def test_errors_are_one_line_exit_2_and_write_nothing(runs: Path, in_tmp: Path, capsys, argv, bad) -> None:
    before = sorted(in_tmp.rglob("*"))
    code, out, err = run_main([*argv, "--out", "tables/summary"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("lnl: error: ") and err.count("\n") == 1 and bad in err, err
    assert sorted(in_tmp.rglob("*")) == before


def test_unreadable_json_is_named(runs: Path, in_tmp: Path, capsys) -> None:
    bad = runs / "dml_s1" / "version_0" / "results.json"
    bad.write_text("{not json")
    code, out, err = run_main(["runs", "--out", "summary"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("lnl: error: cannot read") and str(bad) in err
    assert not list(in_tmp.glob("summary*"))


def test_dispatch_through_lnl_cli_main(runs: Path, in_tmp: Path, capsys) -> None:
    assert cli_main(["aggregate", "runs", "--reference", "CE/digits/sym40_exact", "--out", "t"]) == 0
    out = capsys.readouterr().out
    assert "+0.0300 ± 0.0200" in out and (in_tmp / "t.csv").exists()
    assert cli_main(["aggregate", "runs", "--metric", "nope"]) == 2
    available = "clean_budget, noise/realized_rate, noise_seed, seed, split_seed, test/acc_best_val, test/acc_last, val/acc_best"
    expected = f"lnl: error: unknown metric 'nope' (numeric in every results.json: {available})\n"
    assert capsys.readouterr().err == expected


@pytest.mark.slow
def test_python_dash_m_lnl_aggregate(runs: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lnl", "aggregate", "runs"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "| CE/digits/sym40_exact | 3 | 0,1,2 | 0.8400 ± 0.0529 |" in done.stdout


def test_groups_differing_in_more_than_seeds_are_refused_or_split(in_tmp: Path, capsys) -> None:
    root = in_tmp / "runs"
    for seed in CE:
        for epochs in (3, 30):
            run = make_run(root, f"ce{epochs}_s{seed}", "CE", seed, CE[seed] + epochs / 1000)
            config = yaml.safe_load((run / "config.yaml").read_text())
            config["trainer"] = {"max_epochs": epochs, "logger": {"init_args": {"name": run.parent.name}}}
            (run / "config.yaml").write_text(yaml.safe_dump(config))
    code, out, err = run_main(["runs"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert (
        "differ in trainer.max_epochs (30 in" in err
        and "3 in" in err
        and "--group-by trainer.max_epochs" in err
    )
    code, out, _ = run_main(["runs", "--group-by", "trainer.max_epochs"], capsys)
    rows = table_rows(out)  # the logger's run name differs in every run: not part of the experiment
    assert code == 0 and [r[:2] for r in rows.values()] == [["3", "0,1,2"], ["3", "0,1,2"]]
    assert rows["CE/digits/sym40_exact/max_epochs=30"][2] == "0.8700 ± 0.0529"


def test_one_seed_is_never_counted_twice(runs: Path, in_tmp: Path, capsys) -> None:
    make_run(in_tmp / "runs", "ce_s0_again", "CE", 0, 0.5)
    code, out, err = run_main(["runs"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "'CE/digits/sym40_exact' has two runs with seed 0" in err and "ce_s0_again" in err
