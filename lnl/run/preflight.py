"""Checks made before a run directory exists: checkpoint readable, labels compatible, output writable, values
the optimizers, schedulers and loaders would reject.

See docs/design.md, "Runs, resume and faults".
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from lnl.errors import ConfigError
from lnl.validation import at_least

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


def check_max_epochs(max_epochs: int | None, checkpoint: dict[str, Any] | None = None) -> None:
    """ConfigError for a fit that would not train (`max_epochs` 0 or below -1; -1 means no epoch limit), or
    that resumes a checkpoint past its `max_epochs` (Lightning would refuse only after making the run directory)."""
    if max_epochs is not None and (max_epochs == 0 or max_epochs < -1):
        raise ConfigError(f"trainer.max_epochs = {max_epochs}: must be at least 1 (or -1 for no limit)")
    if checkpoint is None or max_epochs is None or max_epochs == -1:
        return
    try:  # the epoch Lightning restores: the fit loop's completed epochs
        done = int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"])
    except (KeyError, TypeError, ValueError):
        done = int(checkpoint.get("epoch", 0))
    if done > max_epochs:
        raise ConfigError(
            f"trainer.max_epochs = {max_epochs}: the checkpoint has already trained {done} epochs; "
            f"set at least {done} to continue it"
        )


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


# ---------------------------------------------------------------- values the constructors would reject later
_TORCH_INVALID = re.compile(r"^Invalid (?P<what>[\w ]+?)(?: values?| parameter at index \d+)?: ")
_TORCH_NAMES = {"learning rate": "lr", "epsilon": "eps", "beta": "betas", "eta": "etas"}


def config_value(config: Any, dotted: str) -> Any:
    """A value of a parsed (jsonargparse Namespace) or plain-dict config by dotted key, None where absent."""
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, dict) else getattr(config, part, None)
        if config is None:
            return None
    return config


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return dict(value) if isinstance(value, dict) else dict(vars(value))


def check_data_values(data: Any) -> None:
    """ConfigError for data values the loaders would reject only after the run directory exists."""
    workers = config_value(data, "init_args.num_workers")
    if workers is not None:
        at_least(
            "data.init_args.num_workers",
            workers,
            0,
            "0 (load in the main process) or a positive number of loader processes",
        )
    size = config_value(data, "init_args.folder.image_size")
    if size is not None:
        at_least(
            "data.init_args.folder.image_size",
            size,
            1,
            "a positive number of pixels (about your images' size, e.g. 32)",
        )


def _rejected(key: str, class_path: str, kwargs: dict[str, Any], error: Exception) -> ConfigError:
    """The one line for a constructor's refusal: the argument and its value where torch's message names them."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if match := _TORCH_INVALID.match(message):
        what = match["what"].strip()
        arg = _TORCH_NAMES.get(what, what.replace(" ", "_"))
        if arg in kwargs:
            allowed = "each must be in [0, 1)" if arg == "betas" else "must be >= 0"
            return ConfigError(f"{key}.init_args.{arg} = {kwargs[arg]}: {allowed} ({class_path}: {message})")
    return ConfigError(f"{key} = {class_path}: its constructor rejects these arguments: {message}")


def _build(key: str, spec: Any, *args: Any) -> Any:
    class_path = config_value(spec, "class_path")
    kwargs = _as_dict(config_value(spec, "init_args"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _import_class(class_path)(*args, **kwargs)
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError) as error:
        raise _rejected(key, class_path, kwargs, error) from error


def _import_class(path: Any) -> type | None:
    if not isinstance(path, str):
        return None
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return cls if isinstance(cls, type) else None


def check_optimizers(model: Any) -> None:
    """ConfigError for an optimizer or LR-scheduler argument its constructor rejects (a negative `lr`, `betas`
    outside [0, 1), a OneCycleLR without steps, ...): each one the config names is built on a dummy parameter,
    each scheduler on its optimizer (`teacher_scheduler` on `teacher_optimizer`), before anything is written."""
    args = _as_dict(config_value(model, "init_args"))
    specs = {k: v for k, v in args.items() if isinstance(config_value(v, "class_path"), str)}
    param = torch.nn.Parameter(torch.zeros(1))
    optimizers: dict[str, torch.optim.Optimizer] = {}
    for name, spec in specs.items():
        cls = _import_class(config_value(spec, "class_path"))
        if cls is not None and issubclass(cls, torch.optim.Optimizer):
            optimizers[name] = _build(f"model.init_args.{name}", spec, [param])
    for name, spec in specs.items():
        cls = _import_class(config_value(spec, "class_path"))
        if cls is not None and issubclass(cls, (LRScheduler, ReduceLROnPlateau)):
            optimizer = optimizers.get(name.replace("scheduler", "optimizer"))
            _build(f"model.init_args.{name}", spec, optimizer or torch.optim.SGD([param], lr=0.1))
