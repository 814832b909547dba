"""Time of the device views (`lnl.data.device_views`) per batch: host time to draw and launch, wall time to done.

`python -m lnl.tools.bench_views --device cuda` (or `run_views_bench(...)` from another bench): for each view of the
CIFAR family on random uint8 images, the host milliseconds of `DeviceViews.plan` + `apply` (what the training
loop's thread spends; on a GPU the kernels run behind it) and the wall milliseconds until the batch is done.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from lnl.data.batch import Batch, Stream, Views
from lnl.data.device_views import DeviceViews


@dataclass(frozen=True)
class ViewsTiming:
    """Mean over `steps` batches of one view: host ms (plan + launches) and wall ms (until the device is done)."""

    view: str
    batch: int
    host_ms: float
    wall_ms: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_views_bench(
    device: str = "cpu",
    batch: int = 128,
    steps: int = 20,
    views: tuple[str, ...] = ("weak", "strong", "autoaugment"),
) -> list[ViewsTiming]:
    """Time each view alone on `batch` random 32x32 RGB images (2 warm-up batches, then `steps` timed ones)."""
    dev = torch.device(device)
    images = np.random.default_rng(0).integers(0, 256, (4 * batch, 32, 32, 3), dtype=np.uint8)
    out = []
    for view in views:
        dv = DeviceViews(
            images, "cifar", 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), {"noisy": (0, {view: view})}
        )
        host = wall = 0.0
        for step in range(steps + 2):
            index = torch.randperm(len(images), generator=torch.Generator().manual_seed(step))[:batch]
            stream = Stream(Views(), torch.zeros(batch), index, epoch=torch.full((batch,), step))
            _sync(dev)
            t0 = time.perf_counter()
            stream = dv.plan(Batch(stream)).noisy
            stream = stream._replace(
                index=stream.index.to(dev), plans={k: _to(p, dev) for k, p in stream.plans.items()}
            )
            dv.apply(Batch(stream))
            t1 = time.perf_counter()
            _sync(dev)
            t2 = time.perf_counter()
            if step >= 2:
                host, wall = host + (t1 - t0), wall + (t2 - t0)
        out.append(ViewsTiming(view, batch, 1e3 * host / steps, 1e3 * wall / steps))
    return out


def _to(plan, dev: torch.device):  # noqa: ANN001, ANN202
    """A ViewPlan on `dev` (what Lightning's batch transfer does to the batch)."""
    stages = [type(s)(s.order.to(dev, non_blocking=True), s.groups) for s in plan.stages]
    return type(plan)(plan.crop.to(dev, non_blocking=True), stages, plan.cutout.to(dev, non_blocking=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    for row in run_views_bench(args.device, args.batch, args.steps):
        print(asdict(row))


if __name__ == "__main__":
    main()
