"""The `plain` row of `lnl.tools.bench`: CE's network, batch, precision and optimizer in a bare PyTorch loop.

Forward (under bf16 autocast for `bf16-mixed`, as Lightning's mixed-precision plugin does), cross-entropy,
backward, `optimizer.step()`, `zero_grad(set_to_none=True)`; no Trainer, no logging, no finiteness checks. The same
synthetic batch on the device and the same timing rule as every other row (warm-up steps left out, CUDA-synchronized
at each step's start and end), so `x plain` in the table is lnl's own overhead on a CE step.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from lnl.methods.ce import CE
from lnl.tools.bench_measure import BenchResult, peak_rss_mb, rss_mb


def run_plain(args: argparse.Namespace, bench_data: Callable[..., Any], isolated: bool = True) -> BenchResult:
    """Time the plain loop on the setting of `args` (see the module docstring); `bench_data(CE, args, device)`
    makes the synthetic batch every row of the bench uses (`lnl.tools.bench.BenchData`)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    reference = CE(num_classes=args.num_classes, backbone=args.backbone)  # the same network and optimizer
    net = reference.student.to(device)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    optimizer = reference.make_optimizer(reference.optimizer_factory, net.parameters())
    batch = bench_data(CE, args, device).batch.noisy
    x, y = batch.x, batch.y
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if args.precision == "bf16-mixed"
        else contextlib.nullcontext()
    )
    cuda = device.type == "cuda"
    times, cpu_times, rss_start, rss_max = [], [], rss_mb(), 0.0
    for step in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize(device)
            if step == args.warmup:
                torch.cuda.reset_peak_memory_stats(device)
        t0, c0 = time.perf_counter(), time.process_time()
        with autocast:
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(1000 * (time.perf_counter() - t0))
            cpu_times.append(1000 * (time.process_time() - c0))
            rss_max = max(rss_max, rss_mb())
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = (peak_rss_mb() if isolated else rss_max) - rss_start
    return BenchResult(
        method="plain", variant="loop", ms_median=statistics.median(times), ms_mean=statistics.fmean(times),
        ms_min=min(times), ms_max=max(times), cpu_ms_mean=statistics.fmean(cpu_times),
        peak_mem_mb=round(max(peak, 0.0), 1),
    )  # fmt: skip
