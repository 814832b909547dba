"""Checks made before a run directory exists: checkpoint readable, labels compatible, output writable.

See docs/design.md, "Runs, resume and faults".
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lnl.errors import ConfigError

_VERSION = re.compile(r"^version_(\d+)$")
LIGHTNING_CKPT_KEYWORDS = ("last", "best", "hpc", "registry")  # `--ckpt_path=last`: Lightning finds the file


@dataclass(frozen=True)
class RunDir:
    """A run directory `<save_dir>/<name>/version_<N>` as the CSV logger names it."""

    save_dir: str
    name: str
    version: int

    @property
    def path(self) -> Path:
        return Path(self.save_dir) / self.name / f"version_{self.version}"


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint at `path` loaded on the CPU, or ConfigError naming the path and what is wrong with it."""
    if not os.path.exists(path):
        raise ConfigError(f"ckpt_path = {str(path)!r}: no such file")
    if os.path.isdir(path):
        raise ConfigError(f"ckpt_path = {str(path)!r}: a directory, not a checkpoint file")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as error:  # our own checkpoints may hold hparams objects
            if "weights_only" not in str(error).lower().replace(" ", "_"):
                raise
            state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:
        raise ConfigError(
            f"ckpt_path = {str(path)!r}: not a readable checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'truncated or corrupt'})"
        ) from error
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ConfigError(f"ckpt_path = {str(path)!r}: not a Lightning checkpoint (no state_dict)")
    return state


def checkpoint_run_dir(ckpt_path: str | os.PathLike) -> Path:
    """The folder of a checkpoint's run: the parent of its `checkpoints/` folder, else the folder it lies in."""
    folder = Path(ckpt_path).absolute().parent
    return folder.parent if folder.name == "checkpoints" else folder


def run_dir_of(ckpt_path: str | os.PathLike) -> RunDir | None:
    """The run directory a checkpoint lives in (`.../<name>/version_N/checkpoints/x.ckpt`), if it does."""
    path = Path(ckpt_path)
    if len(path.parts) < 5:  # keep a relative path as given (the run wrote its paths relative to its cwd)
        path = path.absolute()
    if path.parent.name != "checkpoints" or not (match := _VERSION.match(path.parents[1].name)):
        return None
    return RunDir(str(path.parents[3]), path.parents[2].name, int(match[1]))


def check_writable(directory: str | os.PathLike, what: str) -> None:
    """ConfigError unless `directory` exists as a writable directory or can be created (nothing is created)."""
    path = Path(directory).absolute()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} = {str(directory)!r}: {str(probe)!r} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} = {str(directory)!r}: {str(probe)!r} is not writable")


def check_max_epochs(max_epochs: int | None) -> None:
    """ConfigError for a fit that would not train (`max_epochs` 0 or below -1; -1 means no epoch limit)."""
    if max_epochs is not None and (max_epochs == 0 or max_epochs < -1):
        raise ConfigError(f"trainer.max_epochs = {max_epochs}: must be at least 1 (or -1 for no limit)")


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_data_settings(current: dict[str, Any], saved: dict[str, Any] | None, ckpt_path: str) -> None:
    """ConfigError naming the first data setting (e.g. `noise.rate`) that differs from the checkpoint's."""
    for key, value in (saved or {}).items():
        if key in current and current[key] != value:
            raise ConfigError(
                f"data.{key} = {_show(current[key])} differs from the checkpoint's {_show(value)} ({ckpt_path}): "
                "resume with the data settings the checkpoint was trained with"
            )


def checkpoint_tag(ckpt_path: str | os.PathLike) -> str:
    """How metrics name a checkpoint: its file stem (`last`, `best-epoch012`)."""
    return Path(ckpt_path).stem
