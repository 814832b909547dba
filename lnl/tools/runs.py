"""`lnl runs TABLE --seeds 0,1,2`: the shell commands (and optionally a SLURM array script) for every cell of a table.

TABLE is a paper-table name, e.g. `dml-table1` or `emlc-table1`, or a plain glob such as
`configs/emlc_cifar10_*.yaml`. The table names are not kept by hand: `tables()` reads the first comment line of
every config in configs/ and files the config under each table it cites ("DML paper Table 4",
"DML paper Tables 2-3", "DML paper App. Tables A, 9", "EMLC Table 1 cell", "the baseline of EMLC's Table 1",
"EMLC Table 2 / Table 4"). The name is `<paper>-table<id>`, lower case; a citation without a paper name before it
takes the previous one on the line, else the config's method prefix (the file name up to the first `_`).

Each run: `lnl fit --config CONFIG --seed_everything=S --data.init_args.noise_seed=S --data.init_args.split_seed=S
--trainer.logger.init_args.name=<stem>_s<S>` plus --extra; the name override is left out where the config's logger
is a list (it has no single `init_args`).
"""

from __future__ import annotations

import argparse
import glob
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import yaml

from lnl.errors import ConfigError
from lnl.tools.aggregate import write_atomic

CONFIGS = Path("configs")

# "DML paper App. Tables A, 9" -> paper DML, ids A, 9; "EMLC's Table 1" -> EMLC, 1; "Tables 2-3" -> 2, 3.
_CITATION = re.compile(r"\bTables?\s+(?P<ids>[0-9A-Z]+(?:\s*[-,]\s*[0-9A-Z]+)*)\b")
_PAPER_BEFORE = re.compile(r"\b(?P<paper>[A-Z][A-Za-z0-9-]*)(?:'s)?(?:\s+paper)?(?:\s+App\.)?\s+$")


def cited_tables(header: str, method: str) -> list[str]:
    """Table names cited by one config header line, e.g. ['dml-table2', 'dml-table3']."""
    names: list[str] = []
    paper = None
    for match in _CITATION.finditer(header):
        before = _PAPER_BEFORE.search(header[: match.start()])
        paper = before["paper"] if before else (paper or method)
        for part in re.split(r"\s*,\s*", match["ids"]):
            ends = re.split(r"\s*-\s*", part)
            if len(ends) == 2 and all(end.isdigit() for end in ends):
                ids = [str(i) for i in range(int(ends[0]), int(ends[1]) + 1)]
            else:
                ids = ends
            names += [f"{paper.lower()}-table{i.lower()}" for i in ids]
    return list(dict.fromkeys(names))


def tables(configs: Path = CONFIGS) -> dict[str, list[Path]]:
    """The registry: table name -> its configs (sorted), derived from the configs' header citations."""
    registry: dict[str, list[Path]] = {}
    for path in sorted(configs.glob("*.yaml")):
        with path.open(encoding="utf-8") as f:
            first = f.readline()
        if not first.startswith("#"):
            continue
        for name in cited_tables(first, path.stem.split("_")[0]):
            registry.setdefault(name, []).append(path)
    return registry


def select(table: str, configs: Path = CONFIGS) -> list[Path]:
    """Configs of a table name or of a glob; ConfigError when there are none."""
    if glob.has_magic(table) or table.endswith((".yaml", ".yml")):
        found = sorted(Path(p) for p in glob.glob(table) if p.endswith((".yaml", ".yml")))
        found = [
            path for path in found if "model" in _load(path)
        ]  # skip non-run files like configs/provenance.yaml
        if not found:
            raise ConfigError(f"no config matches {table!r}")
        return found
    registry = tables(configs)
    if table.lower() not in registry:
        known = ", ".join(sorted(registry)) or f"none (no cited tables in {str(configs)!r})"
        raise ConfigError(
            f"unknown table {table!r}: choose one of {known}, or give a glob like 'configs/dml_*.yaml'"
        )
    return registry[table.lower()]


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; non-negative integers, no repeats."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ConfigError(f"--seeds {text!r}: expected comma-separated non-negative integers, e.g. 0,1,2")
        seeds.append(int(part))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: a seed repeats")
    return seeds


def _load(config: Path) -> dict:
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config {str(config)!r}: {error}") from None
    return data if isinstance(data, dict) else {}


def _logger_is_list(config: Path) -> bool:
    return isinstance((_load(config).get("trainer") or {}).get("logger"), list)


def commands(configs: list[Path], seeds: list[int], extra: Sequence[str] = ()) -> list[list[str]]:
    """One `lnl fit` argv per config x seed, config-major."""
    runs = []
    for config in configs:
        named = not _logger_is_list(config)
        for seed in seeds:
            argv = ["lnl", "fit", "--config", str(config), f"--seed_everything={seed}"]
            argv += [f"--data.init_args.noise_seed={seed}", f"--data.init_args.split_seed={seed}"]
            if named:
                argv.append(f"--trainer.logger.init_args.name={config.stem}_s{seed}")
            runs.append(argv + list(extra))
    return runs


def slurm_script(lines: list[str], table: str, seeds: list[int]) -> str:
    """A SLURM array script: one task (one GPU) per command."""
    body = "\n".join(f"  {shlex.quote(line)}" for line in lines)
    seed_text = ",".join(map(str, seeds))
    return f"""#!/bin/bash
# `lnl runs {table} --seeds {seed_text}`: {len(lines)} runs, one per array task. Submit from the repository root.
#SBATCH --job-name=lnl-runs
#SBATCH --array=0-{len(lines) - 1}
#SBATCH --ntasks=1
#SBATCH --gres=gpu:1
#SBATCH --output=slurm-%A_%a.out
# Afterwards, the table: lnl aggregate runs/ --out {Path(table).stem.replace("*", "all")}
set -euo pipefail
commands=(
{body}
)
eval "${{commands[$SLURM_ARRAY_TASK_ID]}}"
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lnl runs", description="Print the `lnl fit` commands of every cell of a table x seeds.")
    p.add_argument("table", metavar="TABLE", help="table name (e.g. dml-table1) or a config glob (quote it)")
    p.add_argument("--seeds", required=True, help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument(
        "--slurm", metavar="PATH", help="also write a SLURM array script (one GPU per run) to PATH"
    )
    p.add_argument("--out", metavar="PATH", help="write the commands to PATH instead of stdout")
    p.add_argument(
        "--extra", default="", metavar="ARGS", help="appended to every command: --extra='--trainer.x=1'"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """`lnl runs ...`: commands on stdout (or --out), script with --slurm; bad input: one line, exit code 2."""
    try:
        args = parser().parse_args(sys.argv[1:] if argv is None else argv)
        seeds = parse_seeds(args.seeds)
        try:
            extra = shlex.split(args.extra)
        except ValueError as error:
            raise ConfigError(f"--extra {args.extra!r}: {error}") from None
        lines = [shlex.join(argv) for argv in commands(select(args.table), seeds, extra)]
    except ConfigError as error:
        print(f"lnl: error: {error}", file=sys.stderr)
        return 2
    text = "".join(f"{line}\n" for line in lines)
    if args.slurm is not None:
        write_atomic(Path(args.slurm), slurm_script(lines, args.table, seeds))
    if args.out is not None:
        write_atomic(Path(args.out), text)
    else:
        sys.stdout.write(text)
    return 0
