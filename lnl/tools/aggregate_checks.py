"""What `lnl aggregate` may pool into one row: runs that differ in nothing but their seeds, each seed once."""

from __future__ import annotations

import json
from typing import Any, Protocol

from lnl.errors import ConfigError

# Config keys (and everything under them) that do not change what a run computes: its seeds, where it is
# written or resumed from, what it prints, how many processes load its data, how often `last.ckpt` is refreshed.
NOT_THE_EXPERIMENT = (
    "seed_everything",
    "data.init_args.noise_seed",
    "data.init_args.split_seed",
    "ckpt_path",
    "resume_other_run",
    "trainer.logger",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "data.init_args.num_workers",
    "last_checkpoint",
)


class _Run(Protocol):
    directory: Any
    seed: int
    settings: tuple[tuple[str, str], ...] | None


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """A config as dotted keys -> values as text (lists and scalars as JSON)."""
    if isinstance(config, dict) and config:
        out: dict[str, str] = {}
        for key, value in config.items():
            out |= flatten(value, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): json.dumps(config, sort_keys=True, default=str)}


def _ignored(key: str, group_by: list[str]) -> bool:
    names = [*NOT_THE_EXPERIMENT, *(k.split(":", 1)[0] for k in group_by)]
    return any(key == name or key.startswith(f"{name}.") for name in names)


def run_settings(config: Any, group_by: list[str]) -> tuple[tuple[str, str], ...]:
    """What defines a run's experiment: its config.yaml without seeds, paths, display and --group-by keys."""
    return tuple(sorted((k, v) for k, v in flatten(config).items() if not _ignored(k, group_by)))


def check_group(name: str, runs: tuple[_Run, ...]) -> None:
    """ConfigError when a group's runs differ in a setting other than the seeds (naming the first such key, two
    of its values and their runs), or when two runs have one seed (a seed counts once)."""
    known = [run for run in runs if run.settings is not None]  # runs without config.yaml: nothing to compare
    if known:
        first = dict(known[0].settings or ())
        for run in known[1:]:
            other = dict(run.settings or ())
            for key in sorted(first.keys() | other.keys()):
                if first.get(key) != other.get(key):
                    raise ConfigError(
                        f"group {name!r} mixes runs that differ in {key} ({first.get(key, 'absent')} in "
                        f"{str(known[0].directory)!r}, {other.get(key, 'absent')} in {str(run.directory)!r}): "
                        f"only seeds may differ; split them with --group-by {key}, or leave one out"
                    )
    seen: dict[int, _Run] = {}
    for run in runs:
        if run.seed in seen:
            raise ConfigError(
                f"group {name!r} has two runs with seed {run.seed}: {str(seen[run.seed].directory)!r} and "
                f"{str(run.directory)!r}; a seed counts once: leave one out"
            )
        seen[run.seed] = run
