"""`python -m lnl.gpu_check [--cpu-fallback] [--out DIR]`: GPU readiness in one command (`make gpu-check`).

On one CUDA GPU: `lnl.bench` of every method and variant on `wrn28_2`, batch 100, in fp32, bf16-mixed and
bf16-mixed + channels_last, and of EMLC on `resnet34_cifar`, batch 128 (each against CE in the same setting; on an
H200 the fp32 and bf16 sections of both took 90 s); then a 200-step DML and EMLC and a 30-step SimCLR `lnl fit`
(their CIFAR-10 configs) in bf16-mixed with the DDP strategy on one device, on CIFAR-10 pickles written in the
real on-disk format. Writes `gpu_check.json` and `gpu_check.md` (printed too) after every part. Without CUDA, or
with `--cpu-fallback`, the same code paths run at tiny sizes (`tiny_cnn`, batch 4, a few steps) on the CPU in
well under a minute: what CI runs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch import Callback, Trainer

from lnl.bench import BenchError, BenchResult, parse_args, run_bench
from lnl.data.fakedata import write_cifar10

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
METHODS = ("ce", "dml", "emlc", "mlc", "mwnet", "l2rw", "simclr")
# (name, Lightning precision, channels_last)
SETTINGS = (("fp32", "32", False), ("bf16", "bf16-mixed", False), ("bf16_channels_last", "bf16-mixed", True))
FIT_CONFIGS = {
    "dml": "dml_cifar10_sym40.yaml",
    "emlc": "emlc_cifar10_unif50.yaml",
    "simclr": "simclr_cifar10.yaml",
}
FIT_STEP_CAP = {"simclr": 30}  # SimCLR's batch of 1024 (x2 views) on ResNet-34: a few steps show its speed
BUDGET_S = 480


@dataclass(frozen=True)
class Sizes:
    """What one check runs: the GPU sizes of the issue, or tiny CPU ones exercising the same code paths."""

    device: str
    backbone: str = "wrn28_2"
    batch: int = 100
    emlc_backbone: str = "resnet34_cifar"
    emlc_batch: int = 128
    warmup: int = 5
    steps: int = 20
    threads: int | None = None
    fit_steps: int = 200
    fit_timeout_s: int = 240
    fit_overrides: tuple[str, ...] = ()  # extra `lnl fit` flags (CPU: a tiny backbone and batch)
    train_per_class: int = 500
    test_per_class: int = 100


GPU = Sizes("cuda")
CPU = Sizes(
    "cpu", backbone="tiny_cnn", batch=4, emlc_backbone="tiny_cnn", emlc_batch=4, warmup=1, steps=3, threads=1,
    fit_steps=3, fit_timeout_s=120, train_per_class=4, test_per_class=2,
    fit_overrides=("--model.init_args.backbone=tiny_cnn", "--data.init_args.batch_size=8",
                   "--data.init_args.clean_batch_size=8", "--data.init_args.eval_batch_size=32"),
)  # fmt: skip


@dataclass
class BenchSection:
    """One `lnl.bench` run: a suite (`all` methods or `emlc`) on a backbone, batch and setting, CE first."""

    suite: str
    name: str
    backbone: str
    batch_size: int
    precision: str
    channels_last: bool
    wall_s: float
    results: list[BenchResult] = field(default_factory=list)
    error: str | None = None


@dataclass
class FitRun:
    """One `lnl fit` subprocess and what its `FitProbe` saw (`batches`: training steps actually run)."""

    method: str
    command: list[str]
    exit_code: int
    wall_s: float
    log: str
    batches: int = 0
    global_step: int = 0
    train_s: float = 0.0
    steps_per_s: float = 0.0
    peak_mem_mb: float = 0.0
    strategy: str = ""
    world_size: int = 0
    precision: str = ""


@dataclass
class GpuCheckReport:
    """Everything `gpu_check.json` holds."""

    device: str
    device_name: str
    cpu_fallback: bool
    torch_version: str
    float32_matmul_precision: str
    sizes: Sizes
    benches: list[BenchSection]
    fits: list[FitRun]
    wall_s: float = 0.0
    ok: bool = False


class FitProbe(Callback):
    """Counts and times training steps inside `lnl fit`, stops the fit after `steps` of them (every rank), and
    rank zero writes what it saw as JSON to `path`. Lightning's `max_steps` counts optimizer steps instead: two
    per training step for DML and EMLC (student and teacher)."""

    def __init__(self, path: str, steps: int) -> None:
        self.path, self.steps, self.batches, self.t0 = path, steps, 0, 0.0

    def on_train_start(self, trainer: Trainer, pl_module: Any) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self.t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.batches += 1
        if self.batches >= self.steps:
            trainer.should_stop = True

    def on_train_end(self, trainer: Trainer, pl_module: Any) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
            peak = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        train_s = time.perf_counter() - self.t0
        probe = {"batches": self.batches, "global_step": trainer.global_step, "train_s": round(train_s, 3),
                 "steps_per_s": round(self.batches / max(train_s, 1e-9), 3), "peak_mem_mb": round(peak, 1),
                 "strategy": type(trainer.strategy).__name__, "world_size": trainer.world_size,
                 "precision": str(trainer.precision)}  # fmt: skip
        if trainer.is_global_zero:
            Path(self.path).write_text(json.dumps(probe))


@dataclass(frozen=True)
class Selection:
    """Which parts run (all by default): setting names, bench suites, the methods of suite `all`, the fits."""

    settings: tuple[str, ...] = tuple(name for name, _, _ in SETTINGS)
    suites: tuple[str, ...] = ("all", "emlc")
    methods: tuple[str, ...] = METHODS
    fits: tuple[str, ...] = tuple(FIT_CONFIGS)


def run_benches(
    sizes: Sizes, only: Selection = Selection(), done: Callable[[list[BenchSection]], None] = lambda _: None
) -> list[BenchSection]:
    """Every method on the main backbone, then EMLC on its own, in each precision / memory-format setting;
    `done` sees the sections so far after each one (a partial report survives a time limit)."""
    plan = [("all", sizes.backbone, sizes.batch, ",".join(only.methods)),
            ("emlc", sizes.emlc_backbone, sizes.emlc_batch, "emlc")]  # fmt: skip
    sections: list[BenchSection] = []
    for suite, backbone, batch, methods in (row for row in plan if row[0] in only.suites):
        for name, precision, channels_last in (row for row in SETTINGS if row[0] in only.settings):
            if precision == "bf16-mixed" and sizes.device == "cuda" and not torch.cuda.is_bf16_supported():
                sections.append(BenchSection(suite, name, backbone, batch, precision, channels_last, 0.0,
                                             error="bf16 is not supported on this GPU"))  # fmt: skip
                continue
            argv = ["--methods", methods, "--device", sizes.device, "--backbone", backbone, "--batch-size",
                    str(batch), "--warmup", str(sizes.warmup), "--steps", str(sizes.steps), "--precision", precision]  # fmt: skip
            argv += ["--threads", str(sizes.threads)] if sizes.threads else []
            argv += ["--channels-last"] if channels_last else []
            t0 = time.perf_counter()
            section = BenchSection(suite, name, backbone, batch, precision, channels_last, 0.0)
            try:
                section.results = run_bench(parse_args(argv), isolate=False)
            except (BenchError, RuntimeError) as error:
                section.error = f"{type(error).__name__}: {error}"[-2000:]
            section.wall_s = round(time.perf_counter() - t0, 2)
            sections.append(section)
            done(sections)
    return sections


def fit_steps(method: str, sizes: Sizes) -> int:
    """How many training steps the fit of `method` runs."""
    return min(sizes.fit_steps, FIT_STEP_CAP.get(method, sizes.fit_steps))


def fit_command(method: str, sizes: Sizes, root: Path, out: Path, probe_cfg: Path) -> list[str]:
    """The `lnl fit` command line of one fit: the method's CIFAR-10 config, bf16-mixed, DDP, 1 device, and
    `probe_cfg` (a FitProbe that stops it after `fit_steps(method, sizes)` training steps)."""
    return [
        sys.executable, "-m", "lnl", "fit", "--config", str(CONFIGS / FIT_CONFIGS[method]), "--config", str(probe_cfg),
        "--trainer.precision=bf16-mixed", "--trainer.strategy=ddp",
        "--trainer.devices=1", f"--trainer.accelerator={'gpu' if sizes.device == 'cuda' else 'cpu'}",
        "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={out / 'runs'}",
        f"--data.init_args.root={root}", "--data.init_args.download=false",
        *(["--data.init_args.num_workers=0"] if sizes.device == "cpu" else []),
        *(["--data.init_args.val_per_class=1"] if sizes.device == "cpu" else []),
        *(["--data.init_args.clean_per_class=1"] if sizes.device == "cpu" and method != "dml" else []),
        *sizes.fit_overrides,
    ]  # fmt: skip


def run_with_stack_dump(
    cmd: list[str], log: IO[str], env: dict[str, str], cwd: Path, timeout_s: float
) -> int:
    """Run `cmd` (a Python command) with its output in `log`; past `timeout_s` it gets SIGABRT, which Python's
    faulthandler (`-X faulthandler`) answers by writing every thread's stack to the log, then SIGKILL: a fit
    that hangs says where. Returns the exit code, 124 on a timeout."""
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


def run_fits(
    sizes: Sizes,
    out: Path,
    only: Selection = Selection(),
    done: Callable[[list[FitRun]], None] = lambda _: None,
) -> list[FitRun]:
    """DML, EMLC and SimCLR fits through `lnl fit` in subprocesses, on CIFAR-10 pickles written in a temp dir."""
    fits = []
    with tempfile.TemporaryDirectory(prefix="lnl_gpu_check_") as tmp:
        root = write_cifar10(Path(tmp) / "cifar10", sizes.train_per_class, sizes.test_per_class).parent
        env = dict(os.environ, **({"OMP_NUM_THREADS": "1"} if sizes.device == "cpu" else {}))
        package_root = str(Path(__file__).resolve().parents[1])  # the child imports this very lnl
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        for method in (m for m in FIT_CONFIGS if m in only.fits):
            probe_json, probe_cfg = Path(tmp) / f"{method}_probe.json", Path(tmp) / f"{method}_probe.yaml"
            probe = {"class_path": "lnl.gpu_check.FitProbe", "init_args": {"path": str(probe_json),
                                                                            "steps": fit_steps(method, sizes)}}  # fmt: skip
            probe_cfg.write_text(json.dumps({"trainer": {"callbacks": [probe]}}))  # JSON is YAML
            cmd = fit_command(method, sizes, root, out, probe_cfg)
            log = out / f"fit_{method}.log"
            t0 = time.perf_counter()
            with open(log, "w") as f:
                code = run_with_stack_dump(cmd, f, env, out, sizes.fit_timeout_s)
            run = FitRun(method, cmd, code, round(time.perf_counter() - t0, 2), str(log))
            if probe_json.is_file():
                for key, value in json.loads(probe_json.read_text()).items():
                    setattr(run, key, value)
            fits.append(run)
            done(fits)
    return fits


def check_ok(report: GpuCheckReport) -> bool:
    """Every bench section ran every variant with finite positive times; every fit exited 0 and ran its steps."""
    benches = all(
        s.error is None and s.results and all(r.ms_mean > 0 for r in s.results) for s in report.benches
    )
    fits = all(f.exit_code == 0 and f.batches == fit_steps(f.method, report.sizes) for f in report.fits)
    return benches and fits


def _cell(r: BenchResult) -> str:
    ms = f"{r.ms_mean:.1f}" if r.ms_mean >= 1 else f"{r.ms_mean:.2f}"
    ratio = f"{r.ratio_vs_ce:.2f}x" if r.ratio_vs_ce is not None else "n/a"
    return f"{ms} ms, {ratio}, {r.peak_mem_mb:.0f} MB"


def _speedup(by: dict[str, BenchResult], slow: str, fast: str) -> str:
    return f"{by[slow].ms_mean / by[fast].ms_mean:.2f}x" if slow in by and fast in by else "-"


def summary(report: GpuCheckReport) -> str:
    """The short Markdown summary: step ms and peak memory per variant and setting, bf16 vs fp32, the fits."""
    head = "CPU fallback at tiny sizes" if report.cpu_fallback else "GPU sizes"
    budget = "" if report.cpu_fallback or report.wall_s <= BUDGET_S else f" (over the {BUDGET_S} s budget)"
    lines = [f"# lnl gpu-check: {report.device_name}, {head}, {report.wall_s:.0f} s{budget}, "
             f"{'OK' if report.ok else 'FAILED'}", ""]  # fmt: skip
    for suite in dict.fromkeys(s.suite for s in report.benches):
        sections = [s for s in report.benches if s.suite == suite]
        backbone, batch = sections[0].backbone, sections[0].batch_size
        what = "every method" if suite == "all" else suite.upper()
        lines += [f"## bench, {what}: `{backbone}`, batch {batch}: ms per step (mean), x CE step, peak MB", "",
                  "| method | variant | " + " | ".join(s.name for s in sections) + " | bf16 / fp32 speed | channels_last / bf16 speed |",
                  "|---|---|" + "---|" * (len(sections) + 2)]  # fmt: skip
        rows: dict[tuple[str, str], dict[str, BenchResult]] = {}
        for s in sections:
            for r in s.results:
                rows.setdefault((r.method, r.variant), {})[s.name] = r
        for (method, variant), by in rows.items():
            cells = [_cell(by[s.name]) if s.name in by else "-" for s in sections]
            speed = [_speedup(by, "fp32", "bf16"), _speedup(by, "bf16", "bf16_channels_last")]
            lines.append(f"| {method} | {variant} | " + " | ".join(cells + speed) + " |")
        lines += [f"error in {s.name}: {s.error.splitlines()[0]}" for s in sections if s.error] + [""]
    lines += ["## fits (`lnl fit`, bf16-mixed, DDP, 1 device)", "",
              "| method | exit | steps | global_step | steps/s | train s | wall s | peak MB | strategy |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {f.method} | {f.exit_code} | {f.batches} | {f.global_step} | {f.steps_per_s:.2f} | {f.train_s:.1f} | "
              f"{f.wall_s:.1f} | {f.peak_mem_mb:.0f} | {f.strategy} x{f.world_size} |" for f in report.fits]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(report: GpuCheckReport, out: Path, t0: float) -> None:
    """(Re)write `gpu_check.json` and `gpu_check.md` with what has run so far."""
    report.wall_s = round(time.perf_counter() - t0, 1)
    report.ok = check_ok(report)
    (out / "gpu_check.json").write_text(json.dumps(asdict(report), indent=2))
    (out / "gpu_check.md").write_text(summary(report))


def run_check(sizes: Sizes, out: Path, only: Selection = Selection()) -> GpuCheckReport:
    """Run the benches and the fits at `sizes`, write `gpu_check.json` and `gpu_check.md` into `out` (after
    every section, so a run cut short by a time limit still leaves what it measured)."""
    out.mkdir(parents=True, exist_ok=True)
    fallback = sizes.device == "cpu"
    lightning_log = logging.getLogger("lightning.pytorch")
    level, matmul = lightning_log.level, torch.get_float32_matmul_precision()
    t0 = time.perf_counter()
    name = f"CPU ({os.cpu_count()} cores)" if fallback else torch.cuda.get_device_name(0)
    report = GpuCheckReport(sizes.device, name, fallback, torch.__version__, "high", sizes, [], [])

    def benches_done(sections: list[BenchSection]) -> None:
        report.benches = sections
        write_report(report, out, t0)

    def fits_done(fits: list[FitRun]) -> None:
        report.fits = fits
        write_report(report, out, t0)

    try:
        lightning_log.setLevel(logging.WARNING)
        torch.set_float32_matmul_precision("high")  # as `lnl fit` does: "fp32" matmuls are TF32 on Ampere+
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_benches(sizes, only, benches_done)
        if not fallback:
            torch.cuda.empty_cache()
        run_fits(sizes, out, only, fits_done)
    finally:
        lightning_log.setLevel(level)
        torch.set_float32_matmul_precision(matmul)
    write_report(report, out, t0)
    return report


def _names(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n for n in text.split(",") if n)
        bad = [n for n in names if n not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{','.join(bad)} (allowed: {','.join(allowed)})")
        return names

    return parse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lnl.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument(
        "--cpu-fallback", action="store_true", help="tiny sizes on the CPU (the default without CUDA)"
    )
    p.add_argument("--out", default="runs/gpu_check", help="folder of gpu_check.json, gpu_check.md, fit logs")
    every = Selection()
    for flag, allowed in (("settings", every.settings), ("suites", every.suites), ("methods", every.methods),
                          ("fits", every.fits)):  # fmt: skip
        p.add_argument(f"--{flag}", type=_names(allowed), default=allowed, help=f"comma list of {allowed}")
    p.add_argument("--fit-steps", type=int, help="training steps per fit (default: 200 on GPU)")
    p.add_argument("--fit-timeout", type=int, help="seconds per fit subprocess (default: 240 on GPU)")
    args = p.parse_args(argv)
    fallback = args.cpu_fallback or not torch.cuda.is_available()
    only = Selection(args.settings, args.suites, args.methods, args.fits)
    sizes = CPU if fallback else GPU
    sizes = replace(sizes, fit_steps=args.fit_steps or sizes.fit_steps,
                    fit_timeout_s=args.fit_timeout or sizes.fit_timeout_s)  # fmt: skip
    report = run_check(sizes, Path(args.out).resolve(), only)
    print(summary(report))
    print(f"written: {Path(args.out) / 'gpu_check.json'}, {Path(args.out) / 'gpu_check.md'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
