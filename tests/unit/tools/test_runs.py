"""`lnl runs`: the registry from config headers, config x seed coverage, a command that parses, SLURM script, errors."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import ROOT
from lnl.run.main import main as cli_main
from lnl.tools import runs

SEED_OPTIONS = ("seed_everything", "data.init_args.noise_seed", "data.init_args.split_seed")


@pytest.fixture(autouse=True)
def repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # table names resolve against ./configs, like a user at the repository root


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli_main(["runs", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def options(line: str) -> dict[str, str]:
    """`--key=value` options of one command line."""
    return dict(arg[2:].split("=", 1) for arg in shlex.split(line) if arg.startswith("--") and "=" in arg)


def test_citations_parse_into_table_names() -> None:
    assert runs.cited_tables("# DML on X (DML paper Tables 2-3).", "dml") == ["dml-table2", "dml-table3"]
    assert runs.cited_tables("# DML (DML paper App. Tables A, 9).", "dml") == ["dml-tablea", "dml-table9"]
    assert runs.cited_tables("# MLC on X, the baseline of EMLC's Table 1:", "mlc") == ["emlc-table1"]
    assert runs.cited_tables("# EMLC (k = 1) on Clothing1M (EMLC Table 2 / Table 4):", "emlc") == [
        "emlc-table2",
        "emlc-table4",
    ]
    assert runs.cited_tables("# Quickstart: DML on Digits.", "quickstart") == []


def test_registry_comes_from_the_config_headers() -> None:
    registry = runs.tables()
    table1 = {path.name for path in registry["dml-table1"]}
    expected = {path.name for path in (ROOT / "configs").glob("dml_cifar10*_sym*.yaml")}
    assert table1 == expected and len(table1) == 6
    for name, configs in registry.items():  # every config filed under a table cites that table in its header
        number = name.split("-table")[1]
        for config in configs:
            header = config.read_text(encoding="utf-8").splitlines()[0]
            assert "Table" in header and number.upper() in header.upper(), (name, config)


@pytest.mark.parametrize("table", ["dml-table1", "emlc-table1", "configs/emlc_cifar10_*.yaml"])
def test_commands_cover_every_config_and_seed(table: str, capsys: pytest.CaptureFixture[str]) -> None:
    configs = runs.select(table)
    code, out, err = run_main([table, "--seeds", "0,1,2"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == len(configs) * 3
    cells = set()
    for line in lines:
        argv = shlex.split(line)
        assert argv[:3] == ["lnl", "fit", "--config"]
        opts = options(line)
        seeds = {opts[key] for key in SEED_OPTIONS}
        assert len(seeds) == 1  # the seed is applied as all three seed options
        seed = seeds.pop()
        assert opts["trainer.logger.init_args.name"] == f"{Path(argv[3]).stem}_s{seed}"
        cells.add((argv[3], int(seed)))
    assert cells == {(str(config), seed) for config in configs for seed in (0, 1, 2)}


def test_glob_skips_files_that_are_not_run_configs(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("model:\n  class_path: lnl.methods.CE\n")
    (tmp_path / "provenance.yaml").write_text("# not a run config\nfamilies: []\n")
    assert runs.select(str(tmp_path / "*.yaml")) == [tmp_path / "a.yaml"]


def test_extra_and_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "cmds.sh"
    argv = [
        "dml-table4",
        "--seeds",
        "5",
        "--extra=--trainer.max_epochs=1 --trainer.devices 1",
        "--out",
        str(out_file),
    ]
    code, out, err = run_main(argv, capsys)
    assert code == 0 and out == "" and err == ""
    lines = out_file.read_text().splitlines()
    assert len(lines) == 4
    assert all(line.endswith("--trainer.max_epochs=1 --trainer.devices 1") for line in lines)


def test_list_logger_gets_no_name_override(tmp_path: Path) -> None:
    config = tmp_path / "two_loggers.yaml"
    config.write_text("trainer:\n  logger:\n    - class_path: CSVLogger\n    - class_path: WandbLogger\n")
    (line,) = runs.commands([config], [3])
    assert not any(arg.startswith("--trainer.logger") for arg in line)
    assert "--data.init_args.split_seed=3" in line


def test_generated_command_parses_through_the_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["lnl"])  # LightningCLI warns when pytest's own arguments are there too
    code, out, _ = run_main(["configs/quickstart.yaml", "--seeds", "7"], capsys)
    assert code == 0
    (line,) = out.splitlines()
    argv = shlex.split(line)
    assert argv[:2] == ["lnl", "fit"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*argv[1:], "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "seed_everything: 7" in printed
    assert "noise_seed: 7" in printed and "split_seed: 7" in printed
    assert "name: quickstart_s7" in printed


def test_slurm_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "table1.sbatch"
    code, out, _ = run_main(["dml-table1", "--seeds", "0,1,2", "--slurm", str(script)], capsys)
    assert code == 0
    text = script.read_text()
    lines = out.splitlines()
    assert len(lines) == 18
    assert "#SBATCH --array=0-17\n" in text
    assert "#SBATCH --gres=gpu:1\n" in text
    assert "lnl aggregate runs/" in text
    assert '"${commands[$SLURM_ARRAY_TASK_ID]}"' in text
    subprocess.run(["bash", "-n", str(script)], check=True)
    # the bash array holds exactly the printed commands, in order
    shown = subprocess.run(
        [
            "bash",
            "-c",
            f'eval "$(sed -n "/^commands=(/,/^)/p" {shlex.quote(str(script))})"; printf "%s\\n" "${{commands[@]}}"',
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert shown == lines


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-such-table", "--seeds", "0"], "unknown table 'no-such-table'"),
        (["configs/nothing_*.yaml", "--seeds", "0"], "no config matches"),
        (["dml-table1", "--seeds", "0,a"], "--seeds '0,a'"),
        (["dml-table1", "--seeds", ""], "--seeds ''"),
        (["dml-table1", "--seeds", "-1"], "--seeds '-1'"),
        (["dml-table1", "--seeds", "1,1"], "a seed repeats"),
        (["dml-table1"], "--seeds"),
        (["dml-table1", "--seeds", "0", "--extra=--a 'b"], "--extra"),
    ],
)
def test_errors_are_one_line_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "s.sbatch"
    code, out, err = run_main([*argv, "--slurm", str(script)], capsys)
    assert code == 2 and out == ""
    assert err.startswith("lnl: error: ") and err.count("\n") == 1 and message in err
    assert not script.exists()
