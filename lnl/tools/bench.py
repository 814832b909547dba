"""`python -m lnl.tools.bench`: training-step time and peak memory of each method vs a CE step, in one run.

Each method module in `lnl.methods` is found by name (`--methods ce,dml`); its `LNLModule` subclass lists the
variants to time in the class attribute `bench_variants: dict[str, dict]` (variant name -> constructor kwargs;
CE times one variant, `default`). Every variant runs in a fresh subprocess on identical synthetic batches kept
on the device (data loading off the critical path): warm-up steps, then timed steps (CUDA-synchronized;
the ratio uses the mean, so a k-step method's meta step is counted once per k steps), CPU time per step, and
peak memory (CUDA allocator peak on GPU; peak resident-set growth during training on CPU). A `plain` row times
CE's network, batch, precision and optimizer in a bare PyTorch loop (`lnl.tools.bench_plain`); `x plain` is each row's
step time over it, so CE's `x plain` is lnl's own overhead. The DML paper
("Efficiently meta-learning for robust deep networks without prior unbiased set", §5.2, Table 6) reports the
same kind of number as ms per training iteration.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, Trainer
from lightning_utilities.core.apply_func import apply_to_collection

from lnl.data.batch import Batch, DataRequirements, synthetic_batch
from lnl.methods.base import LNLModule
from lnl.tools.bench_measure import BenchError, BenchResult, StepTimer, format_table, peak_rss_mb, ratio


def method_class(name: str) -> type[LNLModule]:
    """The LNLModule subclass defined in `lnl.methods.<name>`."""
    module = importlib.import_module(f"lnl.methods.{name}")
    classes = [
        c for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, LNLModule) and c is not LNLModule and c.__module__ == module.__name__
    ]  # fmt: skip
    if len(classes) != 1:
        raise SystemExit(f"lnl.tools.bench: error: no single method class in lnl.methods.{name}")
    return classes[0]


class _SyntheticBatches:
    """The same batch `steps` times (a sized iterable Lightning accepts as a dataloader)."""

    def __init__(self, batch: Batch, steps: int) -> None:
        self.batch, self.steps = batch, steps

    def __iter__(self):
        return (self.batch for _ in range(self.steps))

    def __len__(self) -> int:
        return self.steps


class BenchData(LightningDataModule):
    """Synthetic 10-class data shaped like the method asks (views, clean stream), already on the device."""

    def __init__(self, method: type[LNLModule], args: argparse.Namespace, device: torch.device) -> None:
        super().__init__()
        b, c = args.batch_size, args.num_classes
        self.num_classes, self.train_size = c, 50 * b
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        batch = synthetic_batch(DataRequirements.of(method), batch_size=b, clean_batch_size=args.clean_batch_size or b,
                                image_size=args.image_size, num_classes=c)  # fmt: skip
        self.batch: Batch = apply_to_collection(
            batch,
            torch.Tensor,
            lambda t: t.to(device).contiguous(memory_format=fmt) if t.ndim == 4 else t.to(device),
        )
        self.steps = args.warmup + args.steps

    def train_dataloader(self) -> Any:
        return _SyntheticBatches(self.batch, self.steps)


def run_variant(method: str, variant: str, args: argparse.Namespace, isolated: bool = True) -> BenchResult:
    """Time one (method, variant) in this process (`plain`: the bare PyTorch loop of `lnl.tools.bench_plain`).

    `isolated`: this process runs nothing else, so the CPU peak is the whole-process maximum resident set
    (`ru_maxrss`); otherwise (several variants in one process) it is the resident set sampled after each timed
    step. On CUDA the peak is the allocator's maximum over the timed steps either way.
    """
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    if method == "plain":
        from lnl.tools.bench_plain import run_plain

        return run_plain(args, BenchData, isolated)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    cls = method_class(method)
    kwargs = dict(getattr(cls, "bench_variants", {}).get(variant, {}))
    device = torch.device(args.device)
    model = cls(num_classes=args.num_classes, backbone=args.backbone, **kwargs)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = BenchData(cls, args, device)
    timer = StepTimer(args.warmup)
    trainer = Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=args.precision,
        max_steps=-1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = (peak_rss_mb() if isolated else timer.rss_max) - timer.rss_start
    times = timer.times
    del trainer, model, data
    return BenchResult(
        method=method, variant=variant, ms_median=statistics.median(times), ms_mean=statistics.fmean(times),
        ms_min=min(times), ms_max=max(times), cpu_ms_mean=statistics.fmean(timer.cpu_times),
        peak_mem_mb=round(max(peak, 0.0), 1),
    )  # fmt: skip


def variants(method: str) -> list[str]:
    """The variant names the bench times for `method` (`default` when the class lists none; `plain`: `loop`)."""
    if method == "plain":
        return ["loop"]
    return list(getattr(method_class(method), "bench_variants", {}) or {"default": {}})


def _child_env() -> dict[str, str]:
    """The child's environment: glibc keeps freed step-sized blocks instead of returning them to the OS each step.

    Without it a meta step (~0.5 GB of transient activations on resnet32, batch 64) is timed with ~10^5 page
    faults that CE never pays: 6.7x instead of 5.0x CE on a 2-core CPU. Set the variables yourself to override.
    """
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(32 * 2**20))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(10**11))
    return env


def _child_args(args: argparse.Namespace, method: str, variant: str) -> list[str]:
    argv = [sys.executable, "-m", "lnl.tools.bench", "--child", f"{method}:{variant}"]
    for key in ("device", "backbone", "batch_size", "clean_batch_size", "image_size", "num_classes",
                "warmup", "steps", "precision", "threads"):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv + (["--channels-last"] if args.channels_last else [])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lnl.tools.bench", description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="ce", help="comma-separated method modules, e.g. ce,dml,emlc,mlc")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backbone", default="resnet32_cifar")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--clean-batch-size", type=int, default=None, help="default: the batch size")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--precision", default="32", choices=["32", "bf16-mixed"])
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--json", default=None, help="write the report to this path")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _run_child(args: argparse.Namespace, method: str, variant: str) -> BenchResult:
    out = subprocess.run(_child_args(args, method, variant), capture_output=True, text=True, env=_child_env())
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
    if out.returncode != 0 or not lines:
        raise BenchError(f"{method}:{variant} failed (exit {out.returncode})\n{out.stderr[-3000:]}")
    return BenchResult.from_dict(json.loads(lines[-1].split(" ", 1)[1]))


def run_bench(args: argparse.Namespace, isolate: bool = True) -> list[BenchResult]:
    """Time CE, the plain loop and every variant of `args.methods` (CE first) and fill in the ratios to CE and
    to the plain loop.

    `isolate`: each variant in a fresh subprocess (the CLI's way: clean CPU memory peaks, glibc settings of
    `_child_env`); otherwise all in this process, one after another (faster; CUDA peaks stay per variant, the
    CPU peak becomes the resident set sampled after each step). Raises BenchError when a variant fails.
    """
    methods = [m.strip() for m in args.methods.split(",") if m.strip() and m.strip() not in ("ce", "plain")]
    results = []
    for method in ["ce", "plain", *methods]:
        for variant in variants(method):
            if isolate:
                results.append(_run_child(args, method, variant))
            else:
                results.append(run_variant(method, variant, args, isolated=False))
    ce, plain = results[0], results[1]
    for r in results:  # mean over whole k-step cycles; CPU time is steadier than wall time on a shared CPU
        r.ratio_vs_ce = ratio(r.ms_mean, ce.ms_mean)
        r.ratio_vs_plain = ratio(r.ms_mean, plain.ms_mean)
        r.cpu_ratio_vs_ce = ratio(r.cpu_ms_mean, ce.cpu_ms_mean)
        r.mem_ratio_vs_ce = ratio(r.peak_mem_mb, ce.peak_mem_mb)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        method, variant = args.child.split(":")
        print("BENCH_RESULT " + json.dumps(asdict(run_variant(method, variant, args))))
        return 0
    try:
        results = run_bench(args)
    except BenchError as error:
        print(f"lnl.tools.bench: error: {error}", file=sys.stderr)
        return 1
    report = {"device": args.device, "backbone": args.backbone, "batch_size": args.batch_size,
              "precision": args.precision, "channels_last": args.channels_last,
              "results": [asdict(r) for r in results]}  # fmt: skip
    print(format_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
