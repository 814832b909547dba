"""Runs are never overwritten by mistake: a checkpoint must belong to the config's method, dataset and labels, a
finished run is continued only into a new run directory, and outputs take a free name (docs/design.md, "Runs,
resume and faults")."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from lnl.data.datamodule import DataRequirements, NoisyLabelDataModule
from lnl.errors import ConfigError
from lnl.methods.base import LNLModule, check_manual_trainer_settings
from lnl.run.preflight import RunDir, check_data_settings

RESULTS = "results.json"  # written at the end of `lnl fit`: a run that has it is finished
LOCK = ".{}.lnl.lock"  # beside the run directory, held by the `lnl fit` writing it (`lock_run_dir`)
DATA_STATE = "NoisyLabelDataModule"  # the data module's entry in a checkpoint


def _class(path: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _same_class(a: str, b: str) -> bool:
    """Whether two class paths name one class (`lnl.methods.CE` and `lnl.methods.ce.CE` do)."""
    cls_a, cls_b = _class(a), _class(b)
    if cls_a is not None and cls_b is not None:
        return cls_a is cls_b
    return a.rpartition(".")[2] == b.rpartition(".")[2]


def check_checkpoint_identity(
    checkpoint: dict[str, Any], model_class: str, dataset: str, ckpt_path: str
) -> None:
    """ConfigError when a checkpoint was trained by another method or on another dataset than the config's.

    Checked on the config as given, before Lightning replaces the config's model by the checkpoint's own.
    """
    saved_class = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    if saved_class and not _same_class(saved_class, model_class):
        mine, theirs = model_class.rpartition(".")[2], saved_class.rpartition(".")[2]
        raise ConfigError(
            f"ckpt_path = {ckpt_path!r} is a {theirs} checkpoint but the config's model is {mine}: "
            f"use a {mine} checkpoint, or the config of the run that wrote it"
        )
    saved_dataset = ((checkpoint.get(DATA_STATE) or {}).get("settings") or {}).get("dataset")
    if saved_dataset is not None and saved_dataset != dataset:
        raise ConfigError(
            f"ckpt_path = {ckpt_path!r} was trained on dataset {saved_dataset!r} but the config's data.dataset is "
            f"{dataset!r}: use the config of the run that wrote it"
        )


def check_checkpoint_labels(checkpoint: dict[str, Any], datamodule: Any, ckpt_path: str) -> None:
    """ConfigError when the config's labels (data settings, then the labels' SHA-256) are not the checkpoint's."""
    saved = checkpoint.get(type(datamodule).__qualname__) or {}
    if not saved:
        return
    check_data_settings(datamodule.settings(), saved.get("settings"), ckpt_path)
    sha = saved.get("labels_sha256")
    if sha is not None and sha != datamodule.labels_sha256:
        raise ConfigError(
            f"ckpt_path = {ckpt_path!r} was trained on other labels (labels sha256 {sha[:12]}…, this config's "
            f"{datamodule.labels_sha256[:12]}…): use the label files and data settings of the run that wrote it"
        )


def check_model_and_data(
    model: Any, datamodule: Any, checkpoint: dict[str, Any] | None, config: Any, subcommand: str
) -> None:
    """The checks that need the built model and data, made before the Trainer is built (it prints its devices):
    the checkpoint's labels are the config's, a manual-optimization fit has Trainer settings its hand-written
    gradients allow (as written: on a CPU Lightning would turn 16-mixed into bf16-mixed), and the method gets the
    data it needs (EMLC a clean set)."""
    if not isinstance(datamodule, NoisyLabelDataModule) or not isinstance(model, LNLModule):
        return
    if checkpoint is not None:
        check_checkpoint_labels(checkpoint, datamodule, config.ckpt_path)
    if subcommand == "fit" and not model.automatic_optimization:
        trainer = config.trainer
        check_manual_trainer_settings(
            type(model).__name__,
            trainer.precision,
            trainer.gradient_clip_val,
            trainer.accumulate_grad_batches,
        )
    datamodule.use_requirements(DataRequirements.of(model))


def resume_in_place(run: RunDir, ckpt_path: str, resume_other_run: bool) -> bool:
    """Whether `fit --ckpt_path` continues the checkpoint's own run directory: only a run that has not finished.

    A finished run (it has results.json) is refused unless `resume_other_run` says to continue it into a new
    run directory, which leaves every file of that run as it is.
    """
    if resume_other_run:
        return False
    if (run.path / RESULTS).exists():
        raise ConfigError(
            f"ckpt_path = {ckpt_path!r} belongs to the finished run {str(run.path)!r} (it has {RESULTS}); "
            "resuming it in place would overwrite its results: add --resume_other_run true to continue it "
            "in a new run directory"
        )
    return True


def check_new_run_dir(directory: Path, what: str) -> None:
    """ConfigError when a fit would write into a directory that already holds a run (an explicit logger version)."""
    if directory.is_dir() and any(directory.iterdir()):
        raise ConfigError(
            f"{what}: {str(directory)!r} already holds a run; leave the version unset (a new version_N is "
            "made) or resume that run with --ckpt_path"
        )


def free_name(path: Path) -> Path:
    """`path` if nothing is there, else the first free `<stem>_<k><suffix>` (k = 1, 2, ...) beside it."""
    candidate, k = path, 0
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.stem}_{k}{path.suffix}")
    return candidate


def write_new_file(path: Path, text: str) -> Path:
    """Write `text` to `path` or, if it exists, to the next free name (created exclusively: never replacing a
    file, even one another process makes meanwhile); returns the path written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        target = free_name(path)
        try:
            with open(target, "x", newline="") as f:
                f.write(text)
            return target
        except FileExistsError:
            continue


_held: list[tuple[Path, int, Path | None]] = []  # (lock file, its descriptor, the top folder we made, if any)


def _holder(lock: Path) -> str:
    try:
        return f"process {int(lock.read_text().split()[0])}"
    except (OSError, ValueError, IndexError):
        return "another process"


def lock_path(directory: Path) -> Path:
    """The lock file of a run directory: `.version_N.lnl.lock` beside it (inside, the logger would warn that the
    new run's directory is not empty)."""
    return directory.parent / LOCK.format(directory.name)


def lock_run_dir(directory: Path) -> None:
    """Take the run directory's lock file (`lock_path`) for this process until `release_run_locks`: created
    atomically (O_CREAT) and held by an exclusive advisory lock (flock), with this process id inside. ConfigError
    when another live process holds it; a lock file left by a process that is gone (killed) is no longer locked
    and is taken over."""
    import fcntl

    missing = [d for d in directory.parents if not d.exists()]
    made = missing[-1] if missing else None
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_path(directory)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            _remove_empty(directory.parent, made)
            raise ConfigError(
                f"run directory {str(directory)!r} is in use by {_holder(lock)} (another `lnl fit` writes it; "
                f"its lock is {lock.name}): wait for it to end, or start a new run"
            ) from None
        try:  # the file we locked may have been removed by its holder at exit: lock the one now there
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held.append((lock, fd, made))


def release_run_locks() -> None:
    """Remove this process's run locks (at the end of every `lnl` command), and the folders it made for them that
    hold nothing else (a fit refused after the lock was taken leaves no `runs/`)."""
    while _held:
        lock, fd, made = _held.pop()
        lock.unlink(missing_ok=True)
        os.close(fd)
        _remove_empty(lock.parent, made)


def _remove_empty(directory: Path, top: Path | None) -> None:
    """Remove `directory` and its parents up to `top` (the folders this process made) while they are empty."""
    if top is None:
        return
    for folder in (directory, *directory.parents):
        if not folder.is_dir() or any(folder.iterdir()):
            return
        folder.rmdir()
        if folder == top:
            return
