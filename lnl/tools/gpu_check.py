"""`python -m lnl.tools.gpu_check [--cpu-fallback] [--out DIR]`: issue 19's GPU acceptance in one command (`make gpu-check`).

On one CUDA GPU, within a time budget (default 540 s):
1. `lnl fit` of DML, CE, EMLC, MW-Net and SimCLR on their CIFAR-10 configs (`dml_cifar10_sym40`, `ce_cifar10_sym40`,
   `emlc_cifar10_unif50`, `mwnet_cifar10_unif40`, `simclr_cifar10`), bf16-mixed on one device, and DML once more
   with `strategy: ddp` on one device, on CIFAR-10 pickles written in the real format (1,000 images per class),
   each stopped after a step budget by `lnl.tools.gpu_probe.FitProbe`: exit 0, results.json, wall - training time;
2. from the DML and CE fits: steady training steps/s and images/s, SM busy % (median of 1 s samples), peak memory,
   the projected wall time of the config's full schedule, and a `torch.profiler` breakdown of 5 steps;
3. `lnl.tools.bench` of CE against the plain PyTorch loop on `wrn28_2` batch 100 and on the CIFAR-10 configs' backbones
   (`wrn28_10` batch 128 of DML / MW-Net, `preact_resnet18_cifar` batch 128 of CE), fp32 (TF32) and bf16-mixed.
`gpu_check.json` and `gpu_check.md` (printed at the end) are rewritten after every part, with PASS / FAIL for each
threshold of issue 19. Without CUDA, or with `--cpu-fallback`, the same code runs at tiny sizes on the CPU (what the
test suite runs). Exit 0 when every part ran and no threshold failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml

from lnl.tools.bench import parse_args, run_bench
from lnl.tools.bench_measure import BenchError
from lnl.tools.fakedata import write_cifar10
from lnl.tools.gpu_fits import CONFIGS, FitSpec, run_fit
from lnl.tools.gpu_report import BenchSection, GpuCheckReport, fit_ok, summary, write_report

FITS = (
    FitSpec("dml", "dml_cifar10_sym40.yaml", 150, profile=True),
    FitSpec("ce", "ce_cifar10_sym40.yaml", 300, profile=True),
    FitSpec("emlc", "emlc_cifar10_unif50.yaml", 100),
    FitSpec("mwnet", "mwnet_cifar10_unif40.yaml", 100),
    FitSpec("simclr", "simclr_cifar10.yaml", 30),
    FitSpec("dml_ddp", "dml_cifar10_sym40.yaml", 80, ddp=True),
)
BENCHES = (("wrn28_2", 100), ("wrn28_10", 128), ("preact_resnet18_cifar", 128))
PRECISIONS = (("fp32", "32"), ("bf16", "bf16-mixed"))


@dataclass(frozen=True)
class Sizes:
    """What one check runs: the GPU sizes, or tiny CPU ones exercising the same code paths."""

    device: str
    per_class: int = 1000
    test_per_class: int = 100
    step_scale: float = 1.0  # x each fit's step budget
    max_steps: int | None = None
    warmup: int = 10
    profile_steps: int = 5
    fit_timeout_s: float = 200.0
    benches: tuple[tuple[str, int], ...] = BENCHES
    bench_warmup: int = 5
    bench_steps: int = 20
    threads: int | None = None
    budget_s: float = 540.0


GPU = Sizes("cuda")
CPU = Sizes("cpu", per_class=8, test_per_class=2, max_steps=3, warmup=1, profile_steps=1, fit_timeout_s=240.0,
            benches=(("tiny_cnn", 4),), bench_warmup=1, bench_steps=3, threads=1, budget_s=1e9)  # fmt: skip


def cpu_overrides(spec: FitSpec) -> tuple[str, ...]:
    """Tiny CPU sizes for one fit: `tiny_cnn`, batch 8, one validation / clean image per class."""
    data = yaml.safe_load((CONFIGS / spec.config).read_text())["data"]["init_args"]
    clean = ("--data.init_args.clean_per_class=1",) if data.get("clean_per_class") else ()
    return ("--model.init_args.backbone=tiny_cnn", "--data.init_args.batch_size=8",
            "--data.init_args.clean_batch_size=8", "--data.init_args.eval_batch_size=32",
            "--data.init_args.val_per_class=1", f"--data.init_args.num_workers={2 if spec.ddp else 0}", *clean)  # fmt: skip


def run_benches(
    sizes: Sizes,
    done: Callable[[BenchSection], None],
    methods: str = "ce",
    left: Callable[[], float] = lambda: 1e9,
) -> list[str]:
    """CE (and the plain loop, and `methods`) on each backbone and batch, fp32 and bf16-mixed, in this process;
    returns the sections skipped because fewer than 20 s of the budget were `left`."""
    skipped = []
    for backbone, batch in sizes.benches:
        for name, precision in PRECISIONS:
            if left() < 20:
                skipped.append(f"bench {backbone} {name}")
                continue
            section = BenchSection(name, backbone, batch, precision)
            if precision == "bf16-mixed" and sizes.device == "cuda" and not torch.cuda.is_bf16_supported():
                section.error = "bf16 is not supported on this GPU"
                done(section)
                continue
            argv = ["--methods", methods, "--device", sizes.device, "--backbone", backbone, "--batch-size",
                    str(batch), "--warmup", str(sizes.bench_warmup), "--steps", str(sizes.bench_steps),
                    "--precision", precision, *(["--threads", str(sizes.threads)] if sizes.threads else [])]  # fmt: skip
            t0 = time.perf_counter()
            try:
                section.results = run_bench(parse_args(argv), isolate=False)
            except (BenchError, RuntimeError) as error:
                section.error = f"{type(error).__name__}: {error}"[-2000:]
            section.wall_s = round(time.perf_counter() - t0, 2)
            if sizes.device == "cuda":
                torch.cuda.empty_cache()
            done(section)
    return skipped


def run_check(
    sizes: Sizes, out: Path, fits: tuple[str, ...], bench: bool = True, methods: str = "ce"
) -> GpuCheckReport:
    """Every part at `sizes` into `out`, the report rewritten after each; parts that would start past the time
    budget are skipped and listed."""
    out.mkdir(parents=True, exist_ok=True)
    cpu = sizes.device == "cpu"
    name = f"CPU ({os.cpu_count()} cores)" if cpu else torch.cuda.get_device_name(0)
    report = GpuCheckReport(sizes.device, name, cpu, torch.__version__)
    t0 = time.perf_counter()

    def save() -> None:
        report.wall_s = round(time.perf_counter() - t0, 1)
        write_report(report, out)

    def left() -> float:
        return sizes.budget_s - (time.perf_counter() - t0)

    lightning_log, matmul = logging.getLogger("lightning.pytorch"), torch.get_float32_matmul_precision()
    level = lightning_log.level
    try:
        with tempfile.TemporaryDirectory(prefix="lnl_gpu_check_") as tmp:
            root = write_cifar10(Path(tmp) / "cifar10", sizes.per_class, sizes.test_per_class).parent
            for spec in (s for s in FITS if s.name in fits):
                if left() < 60:
                    report.skipped.append(f"fit {spec.name}")
                    continue
                steps = sizes.max_steps or max(1, round(spec.steps * sizes.step_scale))
                spec = replace(spec, steps=steps)
                overrides = cpu_overrides(spec) if cpu else ()
                run = run_fit(spec, root, out, cpu=cpu, timeout_s=min(sizes.fit_timeout_s, left()),
                              warmup=sizes.warmup, overrides=overrides, profile_steps=sizes.profile_steps)  # fmt: skip
                report.fits.append(run)
                report.sm_source = report.sm_source or run.sm_source
                save()
        lightning_log.setLevel(logging.WARNING)
        torch.set_float32_matmul_precision("high")  # as `lnl fit` does: "fp32" matmuls are TF32 on Ampere+
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if bench:
                report.skipped += run_benches(
                    sizes, lambda s: (report.benches.append(s), save()), methods, left
                )
    finally:
        lightning_log.setLevel(level)
        torch.set_float32_matmul_precision(matmul)
    report.ran_ok = all(fit_ok(f) for f in report.fits) and all(
        s.error is None and s.results for s in report.benches
    )
    report.finished = True
    save()
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lnl.tools.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument(
        "--cpu-fallback", action="store_true", help="tiny sizes on the CPU (the default without CUDA)"
    )
    p.add_argument(
        "--out", default="runs/gpu_check", help="folder of gpu_check.json / .md, fit logs, profiles"
    )
    p.add_argument("--fits", default=",".join(s.name for s in FITS), help="comma list of fits to run")
    p.add_argument("--no-bench", action="store_true", help="leave out the CE / plain loop benches")
    p.add_argument(
        "--bench-methods", default="ce", help="methods benched against the plain loop (default: ce)"
    )
    p.add_argument("--step-scale", type=float, help="x every fit's step budget (GPU)")
    p.add_argument(
        "--budget", type=float, help="seconds; parts that would start later are skipped (GPU: 540)"
    )
    args = p.parse_args(argv)
    known = {s.name for s in FITS}
    fits = tuple(n for n in args.fits.split(",") if n)
    if not set(fits) <= known:
        print(
            f"lnl.tools.gpu_check: error: --fits {args.fits!r}: allowed {','.join(sorted(known))}",
            file=sys.stderr,
        )
        return 2
    cpu = args.cpu_fallback or not torch.cuda.is_available()
    sizes = CPU if cpu else GPU
    sizes = replace(
        sizes, step_scale=args.step_scale or sizes.step_scale, budget_s=args.budget or sizes.budget_s
    )
    report = run_check(sizes, Path(args.out).resolve(), fits, not args.no_bench, args.bench_methods)
    print(summary(report))
    print(f"written: {Path(args.out) / 'gpu_check.json'}, {Path(args.out) / 'gpu_check.md'}")
    failed = any(v.status == "FAIL" for v in report.verdicts)
    return 0 if report.ran_ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
