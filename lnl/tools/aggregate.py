"""`lnl aggregate`: finished run directories -> one results table (Markdown on stdout, optional .md/.csv files).

Runs group by (method, dataset, noise tag) plus any `--group-by` config keys; a group whose runs differ in any
other config setting than the seeds, or has one seed twice, is refused (lnl/tools/aggregate_checks.py). Each group gets
mean ± sample std per metric and, with `--reference`, the paired difference to the reference group over the seeds both share with
equal training labels: mean ± standard error and how many seeds the group is ahead. Training labels are equal when
the `noisy` rows of the runs' `labels.csv` are (so a method validated on clean labels pairs with one validated on
noisy labels of the same split); without a `labels.csv`, when `labels_sha256` is.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import yaml

from lnl.errors import ConfigError
from lnl.tools.aggregate_checks import check_group, run_settings
from lnl.tools.aggregate_table import SET_SUFFIX, Group, GroupKey, Paired, Row, Run, Stat, to_csv, to_markdown

DEFAULT_METRIC = "test/acc_best_val"
RESULTS = "results.json"
CONFIG = "config.yaml"
_MISSING = object()


def find_results(patterns: list[str]) -> list[Path]:
    """results.json files named by paths or globs; a directory is searched recursively."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = glob.glob(pattern, recursive=True) if glob.has_magic(pattern) else [pattern]
        hits: list[Path] = []
        for match in map(Path, matches):
            if match.is_dir():
                hits += sorted(match.rglob(RESULTS))
            elif match.is_file() and match.name == RESULTS:
                hits.append(match)
        if not hits:
            raise ConfigError(f"no {RESULTS} found under {pattern!r}")
        found.update(dict.fromkeys(path.resolve() for path in hits))
    return list(found)


def _lookup(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return _MISSING
        config = config[part]
    return config


def group_value(config: Any, key: str) -> str | None:
    """The config value of a --group-by key as text (None: not in this config); with `KEY:set` only whether it
    is set, `set` or `None` (e.g. `model.init_args.init_checkpoint:set`: runs from pretrained weights or not)."""
    value = _lookup(config, key.removesuffix(SET_SUFFIX))
    if value is _MISSING:
        return None
    if key.endswith(SET_SUFFIX):
        return "None" if value is None else "set"
    return _scalar(value)


def load_run(path: Path, group_by: list[str]) -> Run:
    """A Run from one results.json (and its config.yaml where --group-by needs it)."""
    try:
        results = json.loads(path.read_text())
        if not isinstance(results, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {str(path)!r}: {error}") from None
    try:
        noise = results["noise"]
        fields = (results["method"], results["dataset"], noise["tag"], int(results["seed"]))
        sha = str(results["labels_sha256"])
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{str(path)!r} lacks a valid {error} entry") from None
    extras: tuple[str | None, ...] = ()
    settings = None
    config_path = path.parent / CONFIG
    if group_by or config_path.is_file():
        try:
            config = yaml.safe_load(config_path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read {str(config_path)!r}: {error}") from None
        extras = tuple(group_value(config, key) for key in group_by)
        settings = run_settings(config, group_by)
    metrics = {
        k: float(v) for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    labels = path.parent / "labels.csv"
    sha = _training_labels_sha(labels) if labels.is_file() else sha
    return Run(path.parent, *fields, labels_sha256=sha, metrics=metrics, extras=extras, settings=settings)


def _training_labels_sha(path: Path) -> str:
    """SHA-256 of the `noisy` rows of a run's labels.csv (index, true and given label of the training part)."""
    with path.open(newline="") as f:
        rows = [",".join(r) for r in csv.reader(f) if len(r) == 4 and r[1] == "noisy"]
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _scalar(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def group_runs(runs: list[Run], group_by: list[str]) -> list[Group]:
    """Runs grouped by (method, dataset, noise tag, --group-by values), sorted by dataset, noise, method."""
    for i, key in enumerate(group_by):
        if all(run.extras[i] is None for run in runs):
            raise ConfigError(f"unknown --group-by key {key!r}: not in any {CONFIG}")
    groups: dict[GroupKey, list[Run]] = {}
    for run in runs:
        key = GroupKey(run.method, run.dataset, run.noise_tag, tuple(zip(group_by, run.extras)))
        groups.setdefault(key, []).append(run)

    def order(key: GroupKey) -> tuple:
        return (key.dataset, key.noise_tag, key.method, [("" if v is None else v) for _, v in key.extras])

    return [Group(key, tuple(groups[key])) for key in sorted(groups, key=order)]


def check_metrics(runs: list[Run], metrics: list[str]) -> None:
    """Every metric must be a numeric entry of every run's results.json."""
    available = set.intersection(*(set(run.metrics) for run in runs))
    for metric in metrics:
        if metric not in available:
            raise ConfigError(
                f"unknown metric {metric!r} (numeric in every {RESULTS}: {', '.join(sorted(available))})"
            )


def summarize(values: list[float]) -> Stat:
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(len(values), statistics.fmean(values), std)


def _by_pair(group: Group) -> dict[tuple[int, str], Run]:
    pairs: dict[tuple[int, str], Run] = {}
    for run in group.runs:
        key = (run.seed, run.labels_sha256)
        if key in pairs:
            raise ConfigError(
                f"group {group.name!r} has two runs with seed {run.seed} and the same labels: "
                f"{str(pairs[key].directory)!r} and {str(run.directory)!r} (split them with --group-by)"
            )
        pairs[key] = run
    return pairs


def paired_difference(group: Group, reference: Group, metric: str) -> Paired:
    """group - reference over runs with equal seed and labels_sha256."""
    mine, theirs = _by_pair(group), _by_pair(reference)
    diffs = [mine[k].metrics[metric] - theirs[k].metrics[metric] for k in sorted(mine.keys() & theirs.keys())]
    if not diffs:
        return Paired(0, None, None, 0)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return Paired(len(diffs), statistics.fmean(diffs), se, sum(d > 0 for d in diffs))


def build_rows(groups: list[Group], metrics: list[str], reference: str | None) -> list[Row]:
    """One Row per group: stats per metric, and paired differences where a reference is named."""
    ref = None
    if reference is not None:
        names = [g.name for g in groups]
        if reference not in names:
            raise ConfigError(f"unknown reference group {reference!r} (groups: {', '.join(names)})")
        ref = groups[names.index(reference)]
    rows = []
    for group in groups:
        stats = {m: summarize([run.metrics[m] for run in group.runs]) for m in metrics}
        is_ref = group is ref
        paired = None if ref is None or is_ref else {m: paired_difference(group, ref, m) for m in metrics}
        rows.append(Row(group, stats, paired, is_ref))
    return rows


def write_atomic(path: Path, text: str) -> None:
    """Write via a temp file in the same directory, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="lnl aggregate", description="Turn finished `lnl fit` run directories into a results table."
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, results.json files or globs")
    p.add_argument(
        "--metric", action="append", help=f"results.json key to report (repeatable; default {DEFAULT_METRIC})"
    )
    p.add_argument(
        "--group-by",
        action="append",
        default=[],
        metavar="KEY",
        help="dotted config.yaml key that also splits groups, e.g. model.init_args.selection.rule; KEY:set splits "
        "by whether it is set, e.g. model.init_args.init_checkpoint:set (repeatable)",
    )
    p.add_argument(
        "--reference", metavar="GROUP", help="group name to compare every group against (paired by seed)"
    )
    p.add_argument("--out", metavar="PREFIX", help="also write PREFIX.md and PREFIX.csv")
    return p


def aggregate(args: argparse.Namespace) -> tuple[str, str]:
    """(Markdown, CSV) for parsed arguments; raises ConfigError on bad input."""
    metrics = list(dict.fromkeys(args.metric or [DEFAULT_METRIC]))
    runs = [load_run(path, args.group_by) for path in find_results(args.runs)]
    check_metrics(runs, metrics)
    groups = group_runs(runs, args.group_by)
    for group in groups:
        check_group(group.name, group.runs)
    rows = build_rows(groups, metrics, args.reference)
    return to_markdown(rows, metrics, args.reference), to_csv(rows, metrics, args.reference, args.group_by)


def main(argv: list[str] | None = None) -> int:
    """`lnl aggregate ...`: the table on stdout (and files with --out); bad input: one line, exit code 2, no files."""
    try:
        args = parser().parse_args(sys.argv[1:] if argv is None else argv)
        markdown, table = aggregate(args)
    except ConfigError as error:
        print(f"lnl: error: {error}", file=sys.stderr)
        return 2
    if args.out is not None:
        write_atomic(Path(f"{args.out}.md"), markdown)
        write_atomic(Path(f"{args.out}.csv"), table)
    sys.stdout.write(markdown)
    return 0
