"""What `lnl.tools.bench` measures and prints: the result record of one (method, variant), the step timer, the
process's resident memory, and the table with each row's ratios to CE and to the plain loop."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer


class BenchError(RuntimeError):
    """A variant's child process failed (its stderr tail is in the message)."""


@dataclass
class BenchResult:
    """One (method, variant)'s step times (ms), CPU time per step and peak memory (MB), and ratios to CE."""

    method: str
    variant: str
    ms_median: float
    ms_mean: float
    ms_min: float
    ms_max: float
    cpu_ms_mean: float
    peak_mem_mb: float
    ratio_vs_ce: float | None = None
    cpu_ratio_vs_ce: float | None = None
    mem_ratio_vs_ce: float | None = None
    ratio_vs_plain: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchResult:
        """The record from its JSON form (unknown keys are ignored)."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


class StepTimer(Callback):
    """Wall time of each training step (synchronized on CUDA) and peak memory after the warm-up."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self.cpu_times, self.rss_start, self.rss_max = warmup, [], [], 0.0, 0.0

    def _sync(self, module: Any) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer: Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        self._sync(module)
        if batch_idx == self.warmup and module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(module.device)
        if batch_idx == 0:
            self.rss_start = rss_mb()
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_train_batch_end(
        self, trainer: Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._sync(module)
        if batch_idx >= self.warmup:
            self.times.append(1000 * (time.perf_counter() - self.t0))
            self.cpu_times.append(1000 * (time.process_time() - self.c0))
            self.rss_max = max(self.rss_max, rss_mb())


def rss_mb() -> float:
    """The resident set of this process now (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ratio(value: float, ce: float) -> float | None:
    """`value / ce` to 3 decimals (None when CE measured 0)."""
    return round(value / ce, 3) if ce > 0 else None


def _fmt_ratio(value: float | None, width: int) -> str:
    return f"{value:>{width}.2f}" if value is not None else f"{'n/a':>{width}}"


def format_table(report: dict[str, Any]) -> str:
    """The human-readable table of a bench report."""
    head = (f"{'method':<6} {'variant':<12} {'ms mean':>9} {'median':>9} {'min':>8} {'max':>8} {'x CE':>6} "
            f"{'x plain':>7} {'x CE cpu':>8} {'peak MB':>9} {'x CE mem':>8}")  # fmt: skip
    rows = [
        f"{r['method']:<6} {r['variant']:<12} {r['ms_mean']:>9.1f} {r['ms_median']:>9.1f} {r['ms_min']:>8.1f} "
        f"{r['ms_max']:>8.1f} {_fmt_ratio(r['ratio_vs_ce'], 6)} {_fmt_ratio(r.get('ratio_vs_plain'), 7)} "
        f"{_fmt_ratio(r['cpu_ratio_vs_ce'], 8)} {r['peak_mem_mb']:>9.1f} {_fmt_ratio(r['mem_ratio_vs_ce'], 8)}"
        for r in report["results"]
    ]
    title = (f"device={report['device']} backbone={report['backbone']} batch={report['batch_size']} "
             f"precision={report['precision']}" + (" channels_last" if report.get("channels_last") else ""))  # fmt: skip
    return "\n".join([title, head, *rows])
