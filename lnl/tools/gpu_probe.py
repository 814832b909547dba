"""`FitProbe`: what `make gpu-check` measures inside an `lnl fit` (a callback added by a config fragment).

It counts and times training steps, stops the fit after `steps` of them (every rank; Lightning's `max_steps` counts
optimizer steps, two per DML / EMLC step), and rank zero writes a `ProbeRecord` as JSON: wall-clock stamps of the
training start and end and of every validation inside it (the parent takes SM-busy samples from those windows),
the steady-state step rate (steps after `warmup`; validations and the checkpoint writes after them left out), the CUDA allocator's peak, and, for
`profile_steps > 0`, a `torch.profiler` breakdown of that many steps right after the warm-up: wall time, time waiting
for the next batch, device (kernel + copy) time and host-device syncs per step, with the top operators in a text file.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer

SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
SCALAR_READS = "aten::_local_scalar_dense"  # `.item()`, `bool(tensor)`, `float(tensor)` of a CUDA tensor


@dataclass
class ProfileBreakdown:
    """Per profiled training step, in ms (device: kernels and copies; data wait: the mean gap between two profiled
    steps), and host-device syncs per step."""

    steps: int
    wall_ms: float
    data_wait_ms: float
    device_ms: float
    host_only_ms: float
    syncs_per_step: float
    scalar_reads_per_step: float


@dataclass
class ProbeRecord:
    """What `FitProbe` saw (times in s; `*_at` are `time.time()` stamps)."""

    batches: int = 0
    global_step: int = 0
    batch_size: int = 0
    train_start_at: float = 0.0
    train_end_at: float = 0.0
    train_s: float = 0.0
    val_s: float = 0.0
    val_windows: list[tuple[float, float]] = field(default_factory=list)
    steady_steps: int = 0
    steady_s: float = 0.0
    steps_per_s: float = 0.0
    data_wait_s: float = 0.0
    peak_mem_mb: float = 0.0
    strategy: str = ""
    world_size: int = 0
    precision: str = ""
    profile: ProfileBreakdown | None = None
    profile_error: str | None = None  # the probe never fails a fit: a profiler error is recorded instead


class FitProbe(Callback):
    """See the module docstring. `path`: the JSON record; `profile_steps`: profiled steps after `warmup`."""

    def __init__(self, path: str, steps: int, warmup: int = 10, profile_steps: int = 0) -> None:
        self.path, self.steps, self.warmup, self.profile_steps = path, steps, warmup, profile_steps
        self.record = ProbeRecord()
        self._t0 = self._val_t0 = self._val_at = self._steady_t0 = self._last_end = 0.0
        self._val_in_steady = 0.0
        self._profiler: Any = None
        self._prof_t0 = self._prof_wait = 0.0

    def _cuda(self, pl_module: Any) -> bool:
        return pl_module.device.type == "cuda"

    def on_train_start(self, trainer: Trainer, pl_module: Any) -> None:
        if self._cuda(pl_module):
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self.record.train_start_at, self._t0 = time.time(), time.perf_counter()

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, idx: int) -> None:
        self._end_pause()
        now = time.perf_counter()
        if self._last_end:
            wait = now - self._last_end
            self.record.data_wait_s += wait
            if self._profiler is not None:
                self._prof_wait += wait
        if self.record.batches == self.warmup and self.profile_steps:
            activities = [torch.profiler.ProfilerActivity.CPU]
            activities += [torch.profiler.ProfilerActivity.CUDA] if self._cuda(pl_module) else []
            try:
                self._profiler = torch.profiler.profile(activities=activities)
                self._profiler.__enter__()
            except Exception as error:
                self._profiler, self.record.profile_error = None, f"{type(error).__name__}: {error}"
            self._prof_t0, self._prof_wait = now, 0.0
        if not self.record.batch_size:
            # a typed batch (lnl.data.batch.Batch: batch.noisy.y), or a dict one
            noisy = batch.get("noisy", batch) if isinstance(batch, dict) else getattr(batch, "noisy", None)
            y = noisy.get("y") if isinstance(noisy, dict) else getattr(noisy, "y", None)
            self.record.batch_size = int(y.shape[0]) if y is not None else 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.record.batches += 1
        n = self.record.batches
        if self._profiler is not None and n == self.warmup + self.profile_steps:
            self._finish_profile(pl_module)
        if n == self.warmup + self.profile_steps:  # the steady window starts after warm-up and profiling
            self._sync(pl_module)
            self._steady_t0, self._val_in_steady = time.perf_counter(), 0.0
        self._last_end = time.perf_counter()
        if n >= self.steps:
            trainer.should_stop = True

    def on_validation_start(self, trainer: Trainer, pl_module: Any) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._val_t0, self._val_at = time.perf_counter(), time.time()

    def _end_pause(self) -> None:
        """Close a validation window at the next training step: it holds the checkpoint writes after it too."""
        if not self._val_t0:
            return
        now = time.perf_counter()
        spent = now - self._val_t0
        self.record.val_s += spent
        self._val_in_steady += spent if self._steady_t0 else 0.0
        self.record.val_windows.append((self._val_at, time.time()))
        self._last_end, self._val_t0 = now, 0.0  # a validation is no wait for data

    def _sync(self, pl_module: Any) -> None:
        if self._cuda(pl_module):
            torch.cuda.synchronize(pl_module.device)

    def _finish_profile(self, pl_module: Any) -> None:
        try:
            self._summarize_profile(pl_module)
        except Exception as error:
            self.record.profile_error = f"{type(error).__name__}: {error}"
        self._profiler = None

    def _summarize_profile(self, pl_module: Any) -> None:
        self._sync(pl_module)
        wall = time.perf_counter() - self._prof_t0
        self._profiler.__exit__(None, None, None)
        events = self._profiler.key_averages()
        steps = self.profile_steps
        device_us = sum(getattr(e, "self_device_time_total", 0) for e in events)
        syncs = sum(e.count for e in events if e.key in SYNC_EVENTS)
        scalars = sum(e.count for e in events if e.key == SCALAR_READS)
        wall_ms, device_ms = 1000 * wall / steps, device_us / 1000 / steps
        self.record.profile = ProfileBreakdown(
            steps, round(wall_ms, 2), round(1000 * self._prof_wait / max(steps - 1, 1), 2), round(device_ms, 2),
            round(max(wall_ms - device_ms, 0.0), 2), syncs / steps, scalars / steps,
        )  # fmt: skip
        sort = "self_device_time_total" if self._cuda(pl_module) else "self_cpu_time_total"
        Path(self.path).with_suffix(".profile.txt").write_text(events.table(sort_by=sort, row_limit=30))

    def on_train_end(self, trainer: Trainer, pl_module: Any) -> None:
        self._end_pause()
        self._sync(pl_module)
        r, now = self.record, time.perf_counter()
        if self._profiler is not None:  # fewer steps than warm-up + profile: close it unreported
            self._profiler.__exit__(None, None, None)
            self._profiler, self.record.profile_error = None, "the fit ended inside the profiled steps"
        r.train_end_at, r.train_s, r.global_step = time.time(), round(now - self._t0, 3), trainer.global_step
        if self._steady_t0:
            r.steady_steps = r.batches - self.warmup - self.profile_steps
            r.steady_s = round(now - self._steady_t0 - self._val_in_steady, 3)
        else:  # a short run (the CPU check): every step, validation left out
            r.steady_steps, r.steady_s = r.batches, round(now - self._t0 - r.val_s, 3)
        r.steps_per_s = round(r.steady_steps / max(r.steady_s, 1e-9), 3)
        if self._cuda(pl_module):
            r.peak_mem_mb = round(torch.cuda.max_memory_allocated(pl_module.device) / 2**20, 1)
        else:
            r.peak_mem_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        r.strategy, r.world_size = type(trainer.strategy).__name__, trainer.world_size
        r.precision = str(trainer.precision)
        if trainer.is_global_zero:
            Path(self.path).write_text(json.dumps(asdict(r)))
