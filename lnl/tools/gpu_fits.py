"""The `lnl fit` part of `make gpu-check`: one subprocess per fit, SM-busy sampling, the paper-schedule projection.

Each fit runs its CIFAR-10 config on generated CIFAR-10 pickles (the real on-disk format) with a `FitProbe`
(lnl/tools/gpu_probe.py) that stops it after a step budget. The parent samples the GPU's busy percentage once a second
(NVML through `pynvml` when installed, else `nvidia-smi --query-gpu=timestamp,utilization.gpu -lms 1000`) and keeps
the samples inside the probe's training window, validations and its first seconds left out; their median is the
fit's SM-busy %. `after_training_s` = wall time - training time: startup, tests, label report, results.json.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import yaml

from lnl.tools.gpu_probe import ProbeRecord

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # lnl/tools/gpu_fits.py -> the repository
CIFAR10_TRAIN = 50_000
STREAM_WARNING = "The AccumulateGrad node's stream does not match"
SM_SKIP_S = 3.0  # samples of the first seconds of training (cuDNN autotuning, warm-up) are left out


@dataclass(frozen=True)
class FitSpec:
    """One fit: a name, its config, its step budget, and whether it runs under DDP on one device."""

    name: str
    config: str
    steps: int
    ddp: bool = False
    profile: bool = False


@dataclass
class FitRun:
    """One fit's outcome: exit code, results.json, timings, speed, SM busy, memory, the paper-schedule projection."""

    name: str
    config: str
    command: list[str]
    exit_code: int = -1
    results_json: bool = False
    wall_s: float = 0.0
    after_training_s: float = 0.0
    startup_s: float = 0.0
    end_s: float = 0.0  # from the end of training to the exit: tests, label report, results.json
    stream_mismatch_warnings: int = 0  # "The AccumulateGrad node's stream does not match ..." in the log
    sm_busy_median: float | None = None
    sm_samples: int = 0
    sm_source: str = ""
    images_per_s: float = 0.0
    paper_epochs: int = 0
    paper_steps: int = 0
    paper_hours: float | None = None
    log: str = ""
    run_dir: str = ""
    probe: ProbeRecord = field(default_factory=ProbeRecord)


class GpuSampler:
    """GPU busy % (`utilization.gpu`) once a second in a background thread: (time.time(), percent) samples."""

    def __init__(self, device_index: int = 0, period_s: float = 1.0) -> None:
        self.samples: list[tuple[float, float]] = []
        self.source = "none"
        self._index, self._period, self._stop = device_index, period_s, threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> GpuSampler:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self._index)
            self.source = "nvml"
            self._thread = threading.Thread(target=self._nvml, args=(pynvml, handle), daemon=True)
            self._thread.start()
        except Exception:  # no pynvml or no NVML: nvidia-smi, if present
            if shutil.which("nvidia-smi"):
                self.source = "nvidia-smi"
                cmd = ["nvidia-smi", f"--id={self._index}", "--query-gpu=timestamp,utilization.gpu",
                       "--format=csv,noheader,nounits", f"-lms={int(self._period * 1000)}"]  # fmt: skip
                self._proc = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
                )
                self._thread = threading.Thread(target=self._smi, daemon=True)
                self._thread.start()
        return self

    def _nvml(self, pynvml: Any, handle: Any) -> None:
        while not self._stop.wait(self._period):
            self.samples.append((time.time(), float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)))

    def _smi(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            stamp, _, value = line.strip().partition(", ")
            try:
                at = datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp()
                self.samples.append((at, float(value)))
            except ValueError:
                continue

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)


def sm_busy(samples: list[tuple[float, float]], probe: ProbeRecord) -> list[float]:
    """The samples inside the training window (after its first `SM_SKIP_S` s), validations left out."""
    start, end = probe.train_start_at + SM_SKIP_S, probe.train_end_at

    def in_validation(at: float) -> bool:
        return any(a - 1.0 <= at <= b + 1.0 for a, b in probe.val_windows)

    return [v for at, v in samples if start <= at <= end and not in_validation(at)]


def paper_schedule(config: Path) -> tuple[int, int]:
    """(epochs, training steps) of the config's full schedule on the real CIFAR-10 (50,000 training images less
    the clean and validation hold-outs; last partial batch dropped, as the data module does)."""
    cfg = yaml.safe_load(config.read_text())
    data = cfg["data"]["init_args"]
    held = 10 * (int(data.get("clean_per_class", 0)) + int(data.get("val_per_class", 0)))
    epochs = int(cfg["trainer"]["max_epochs"])
    return epochs, epochs * ((CIFAR10_TRAIN - held) // int(data["batch_size"]))


def fit_command(spec: FitSpec, data_root: Path, out: Path, probe_cfg: Path, cpu: bool,
                overrides: tuple[str, ...]) -> list[str]:  # fmt: skip
    """`lnl fit` of one spec: its config, bf16-mixed, one device (DDP when `spec.ddp`), the probe, the data."""
    return [
        sys.executable, "-m", "lnl", "fit", "--config", str(CONFIGS / spec.config), "--config", str(probe_cfg),
        "--trainer.precision=bf16-mixed", "--trainer.devices=1", f"--trainer.strategy={'ddp' if spec.ddp else 'auto'}",
        f"--trainer.accelerator={'cpu' if cpu else 'gpu'}", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={out / 'runs'}", f"--trainer.logger.init_args.name={spec.name}",
        f"--data.init_args.root={data_root}", "--data.init_args.download=false", "--watchdog.timeout_s=60",
        *overrides,
    ]  # fmt: skip


def run_with_stack_dump(
    cmd: list[str], log: IO[str], env: dict[str, str], cwd: Path, timeout_s: float
) -> int:
    """Run a Python command, its output in `log`; past `timeout_s` SIGABRT (faulthandler's stacks), then SIGKILL."""
    cmd = [cmd[0], "-X", "faulthandler", *cmd[1:]] if cmd[0] == sys.executable else cmd
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 124


def run_fit(spec: FitSpec, data_root: Path, out: Path, *, cpu: bool, timeout_s: float, warmup: int,
            overrides: tuple[str, ...] = (), profile_steps: int = 5) -> FitRun:  # fmt: skip
    """Run one fit in a subprocess while sampling the GPU; fill in everything `FitRun` holds."""
    probe_json = out / f"probe_{spec.name}.json"
    probe_cfg = out / f"probe_{spec.name}.yaml"
    probe_json.unlink(missing_ok=True)
    init = {
        "path": str(probe_json),
        "steps": spec.steps,
        "warmup": warmup,
        "profile_steps": profile_steps if spec.profile else 0,
    }
    probe_cfg.write_text(json.dumps({"trainer": {"callbacks": [{"class_path": "lnl.tools.gpu_probe.FitProbe",
                                                                "init_args": init}]}}))  # fmt: skip
    cmd = fit_command(spec, data_root, out, probe_cfg, cpu, overrides)
    env = dict(os.environ, PYTHONUNBUFFERED="1", **({"OMP_NUM_THREADS": "1"} if cpu else {}))
    package_root = str(Path(__file__).resolve().parents[2])  # the child imports this very lnl
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    run = FitRun(spec.name, spec.config, cmd, log=str(out / f"fit_{spec.name}.log"))
    started = time.time()
    with open(run.log, "w") as log, GpuSampler() as sampler:
        run.exit_code = run_with_stack_dump(cmd, log, env, out, timeout_s)
    run.wall_s, run.sm_source = round(time.time() - started, 2), sampler.source
    if probe_json.is_file():
        raw = json.loads(probe_json.read_text())
        profile = raw.pop("profile", None)
        run.probe = ProbeRecord(**raw)
        if profile:
            from lnl.tools.gpu_probe import ProfileBreakdown

            run.probe.profile = ProfileBreakdown(**profile)
        run.startup_s = round(run.probe.train_start_at - started, 2)
        run.after_training_s = round(run.wall_s - run.probe.train_s, 2)
        run.end_s = round(started + run.wall_s - run.probe.train_end_at, 2)
        busy = sm_busy(sampler.samples, run.probe)
        run.sm_samples = len(busy)
        run.sm_busy_median = statistics.median(busy) if busy else None
        run.images_per_s = round(run.probe.steps_per_s * run.probe.batch_size, 1)
    run.stream_mismatch_warnings = Path(run.log).read_text(errors="replace").count(STREAM_WARNING)
    versions = sorted((out / "runs" / spec.name).glob("version_*"), key=lambda p: p.stat().st_mtime)
    if versions:
        run.run_dir = str(versions[-1])
        run.results_json = (versions[-1] / "results.json").is_file()
    run.paper_epochs, run.paper_steps = paper_schedule(CONFIGS / spec.config)
    if run.probe.steps_per_s > 0:
        run.paper_hours = round(run.paper_steps / run.probe.steps_per_s / 3600, 2)
    return run
