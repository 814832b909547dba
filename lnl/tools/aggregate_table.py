"""The records of `lnl aggregate` (a run, a group of runs, a row of mean ± std and paired differences) and the
table's two formats, Markdown and CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SET_SUFFIX = ":set"  # --group-by KEY:set: whether KEY is set, not its value


@dataclass(frozen=True)
class Run:
    """One finished `lnl fit` run."""

    directory: Path
    method: str
    dataset: str
    noise_tag: str
    seed: int
    labels_sha256: str  # identity of the training labels (see the module docstring)
    metrics: dict[str, float]  # every numeric top-level value of results.json
    extras: tuple[str | None, ...]  # values of the --group-by keys, in order (None: key absent)
    settings: tuple[tuple[str, str], ...] | None = None  # its config.yaml but seeds and paths (None: no file)


@dataclass(frozen=True)
class GroupKey:
    """What makes runs one group; `name` is what `--reference` takes."""

    method: str
    dataset: str
    noise_tag: str
    extras: tuple[tuple[str, str | None], ...] = ()

    @property
    def name(self) -> str:
        parts = [self.method, self.dataset, self.noise_tag]
        parts += [f"{_short(key, self.extras)}={value}" for key, value in self.extras if value is not None]
        return "/".join(parts)


@dataclass(frozen=True)
class Group:
    key: GroupKey
    runs: tuple[Run, ...]

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def seeds(self) -> list[int]:
        return sorted(run.seed for run in self.runs)


@dataclass(frozen=True)
class Stat:
    """Mean and sample std (None for a single value)."""

    n: int
    mean: float
    std: float | None


@dataclass(frozen=True)
class Paired:
    """Paired difference group - reference over shared (seed, labels) pairs: mean ± standard error."""

    n: int
    mean: float | None
    se: float | None
    ahead: int


@dataclass(frozen=True)
class Row:
    group: Group
    stats: dict[str, Stat]
    paired: dict[str, Paired] | None  # None: no reference, or this is the reference
    is_reference: bool = False


def _short(key: str, extras: tuple[tuple[str, Any], ...]) -> str:
    """The last dotted component of a --group-by key, or the whole key where that is ambiguous."""
    key = key.removesuffix(SET_SUFFIX)
    last = key.rsplit(".", 1)[-1]
    clash = sum(other.removesuffix(SET_SUFFIX).rsplit(".", 1)[-1] == last for other, _ in extras) > 1
    return key if clash else last


def _pm(mean: float | None, spread: float | None, signed: bool = False) -> str:
    if mean is None:
        return "–"
    text = f"{mean:+.4f}" if signed else f"{mean:.4f}"
    return text if spread is None else f"{text} ± {spread:.4f}"


def to_markdown(rows: list[Row], metrics: list[str], reference: str | None) -> str:
    """The table: group, n, seeds, mean ± std per metric, and Δ vs reference ± SE with seeds ahead."""
    header = ["group", "n", "seeds"] + [f"{m} (mean ± std)" for m in metrics]
    if reference is not None:
        for m in metrics:
            header += [f"Δ {m} vs {reference} (mean ± SE)", "ahead / paired"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|",
    ]
    for row in rows:
        cells = [row.group.name, str(len(row.group.runs)), ",".join(map(str, row.group.seeds))]
        cells += [_pm(row.stats[m].mean, row.stats[m].std) for m in metrics]
        if reference is not None:
            for m in metrics:
                p = row.paired[m] if row.paired is not None else None
                cells += (
                    ["(reference)", ""] if p is None else [_pm(p.mean, p.se, signed=True), f"{p.ahead}/{p.n}"]
                )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row], metrics: list[str], reference: str | None, group_by: list[str]) -> str:
    """The same table with full precision, one column per number."""
    header = ["group", "method", "dataset", "noise", *group_by, "n", "seeds"]
    for m in metrics:
        header += [f"{m}_mean", f"{m}_std"]
        if reference is not None:
            header += [f"{m}_diff_mean", f"{m}_diff_se", f"{m}_ahead", f"{m}_paired"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        key = row.group.key
        cells = [row.group.name, key.method, key.dataset, key.noise_tag]
        cells += ["" if v is None else v for _, v in key.extras]
        cells += [len(row.group.runs), " ".join(map(str, row.group.seeds))]
        for m in metrics:
            cells += [repr(row.stats[m].mean), "" if row.stats[m].std is None else repr(row.stats[m].std)]
            if reference is not None:
                p = row.paired[m] if row.paired is not None else None
                if p is None:
                    cells += ["", "", "", ""]
                else:
                    cells += [
                        "" if p.mean is None else repr(p.mean),
                        "" if p.se is None else repr(p.se),
                        p.ahead,
                        p.n,
                    ]
        writer.writerow(cells)
    return buffer.getvalue()
