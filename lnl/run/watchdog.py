"""A run that stops making progress says where: every thread's stack in `<run_dir>/stacks.txt`.

`StallWatchdog` (the CLI's `watchdog` group, `--watchdog.timeout_s`, default 600 s, 0 turns it off) arms Python's
`faulthandler.dump_traceback_later` and re-arms it on progress: every training, validation and test batch, the
start of each stage, each step and batch of the end-of-fit report (`beat`), and the interpreter's exit handlers. When nothing re-arms it for
`timeout_s`, faulthandler's own C thread writes every thread's stack into the file (again every `timeout_s` while
the stall lasts); it needs neither the GIL nor a signal, so it works where a parent's SIGABRT or a debugger cannot.
A Python thread logs one line naming the stage and the file (when the GIL is free). An empty file is removed when
the run ends. Rank r > 0 writes `stacks_rank<r>.txt`.
"""

from __future__ import annotations

import atexit
import faulthandler
import logging
import os
import threading
import time
from typing import IO, Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lnl.validation import off_or_positive

log = logging.getLogger(__name__)

_ACTIVE: StallWatchdog | None = None  # the watchdog that owns faulthandler's timer now
_LAST: StallWatchdog | None = None  # the latest one started: it watches the interpreter's exit
_EXIT_WATCH_REGISTERED = False
REARM_EVERY_S = 1.0  # re-arming starts a C thread: at most once a second (or a tenth of a shorter limit)


def stop() -> None:
    """Stop the active watchdog (end of a command run in-process); the interpreter's exit is watched again."""
    if _ACTIVE is not None:
        _ACTIVE.stop()


def _watch_exit() -> None:
    last = _LAST
    if last is not None and last.path and os.path.isdir(os.path.dirname(last.path) or "."):
        try:  # an exit must never fail because of its watch (e.g. no new threads allowed any more)
            last.start(last.path, "exit")
        except Exception as error:
            log.debug("lnl: the exit is not watched: %s", error)


# atexit runs last-in first-out: `stop` (registered at import) runs after every exit handler, `_watch_exit`
# (registered at a trainer's setup, after Lightning registers its own, e.g. destroying the process group) before
# them, so those handlers run watched.
atexit.register(stop)


def beat(stage: str | None = None) -> None:
    """Progress in `stage` (or the current one): re-arm the active watchdog, if a run has one."""
    if _ACTIVE is not None:
        _ACTIVE.progress(stage)


class StallWatchdog(Callback):
    """Writes every thread's stack to `<run_dir>/stacks.txt` when a stage makes no progress for `timeout_s`.

    Args:
        timeout_s: seconds without progress before the stacks are written (0: off).
    """

    def __init__(self, timeout_s: float = 600.0) -> None:
        self.timeout_s = float(off_or_positive("watchdog.timeout_s", timeout_s, "seconds"))
        self.path: str | None = None
        self.stage = ""
        self._file: IO[str] | None = None
        self._armed_at = 0.0
        self._deadline = float("inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ arming
    def start(self, path: str, stage: str) -> None:
        """Watch from now on, writing stacks to `path` (appended)."""
        global _ACTIVE, _LAST
        if not self.timeout_s or self._file is not None:
            return
        if _ACTIVE is not None:  # one faulthandler timer per process: the newest run owns it
            _ACTIVE.stop()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.path, self._file = path, open(path, "a")  # noqa: SIM115 (open while watching; closed in stop)
        _ACTIVE = _LAST = self
        self._stop.clear()
        self._thread = threading.Thread(target=self._announce, name="lnl-watchdog", daemon=True)
        self._thread.start()
        self.progress(stage, force=True)

    def progress(self, stage: str | None = None, force: bool = False) -> None:
        """Re-arm (at most once a second unless the stage changes or `force`)."""
        if self._file is None:
            return
        now = time.monotonic()
        changed = stage is not None and stage != self.stage
        if not (force or changed or now - self._armed_at >= min(REARM_EVERY_S, self.timeout_s / 10)):
            return
        if changed:
            self.stage = stage or ""
        faulthandler.dump_traceback_later(self.timeout_s, repeat=True, file=self._file)
        self._armed_at, self._deadline = now, now + self.timeout_s

    def stop(self) -> None:
        """Stop watching; remove the stacks file if nothing was written to it."""
        global _ACTIVE
        if self._file is None:
            return
        faulthandler.cancel_dump_traceback_later()
        self._stop.set()
        self._file.close()
        self._file = None
        _ACTIVE = None if _ACTIVE is self else _ACTIVE
        if self.path and os.path.isfile(self.path) and os.path.getsize(self.path) == 0:
            os.remove(self.path)

    def _announce(self) -> None:
        """The log line of a stall (faulthandler's C thread writes the stacks at the same deadline)."""
        told = float("nan")
        while not self._stop.wait(0.25):
            deadline = self._deadline
            if time.monotonic() >= deadline + 0.1 and deadline != told:
                told = deadline
                log.warning(
                    "lnl: no progress in stage %r for %g s: every thread's stack is in %s",
                    self.stage, self.timeout_s, self.path,
                )  # fmt: skip

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        global _EXIT_WATCH_REGISTERED
        if not _EXIT_WATCH_REGISTERED:
            atexit.register(_watch_exit)
            _EXIT_WATCH_REGISTERED = True
        if not self.timeout_s or self._file is not None:
            return
        run_dir = trainer.log_dir  # a collective call under DDP: every rank asks
        name = "stacks.txt" if trainer.global_rank == 0 else f"stacks_rank{trainer.global_rank}.txt"
        self.start(os.path.join(run_dir or "runs", name), f"{stage} setup")

    def _beat(self, trainer: Trainer, *args: Any) -> None:
        fn, stage = trainer.state.fn, trainer.state.stage
        self.progress(f"{fn.value if fn else '?'}: {stage.value if stage else '?'}")

    on_train_start = on_train_batch_start = on_train_batch_end = _beat
    on_validation_start = on_validation_batch_start = on_validation_batch_end = _beat
    on_test_start = on_test_batch_start = on_test_batch_end = _beat
    on_predict_start = on_predict_batch_start = on_predict_batch_end = _beat
