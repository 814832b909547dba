"""Shared kit for the EMLC/MLC tests: synthetic paired batches and a small Trainer runner (no tests here)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, Trainer, seed_everything

C = 4


def sgd(lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4) -> Any:
    return functools.partial(torch.optim.SGD, lr=lr, momentum=momentum, weight_decay=weight_decay)


def make_batch(seed: int, b: int, bc: int, size: int = 8) -> dict[str, Any]:
    """One {"noisy", "clean"} batch; images carry a class-dependent mean so that something is learnable."""
    g = torch.Generator().manual_seed(seed)
    y_true = torch.randint(0, C, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.4
    y = torch.where(flip, torch.randint(0, C, (b,), generator=g), y_true)
    yc = torch.randint(0, C, (bc,), generator=g)

    def images(labels: torch.Tensor) -> torch.Tensor:
        return (
            torch.randn(len(labels), 3, size, size, generator=g) + labels.float()[:, None, None, None] * 0.5
        )

    noisy = {"x": images(y_true), "y": y, "y_true": y_true, "index": torch.arange(b)}
    return {"noisy": noisy, "clean": {"x": images(yc), "y": yc, "index": torch.arange(bc)}}


def _slice(batch: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    """Contiguous block `rank` of every tensor (so odd positions stay odd: corruption picks the same samples)."""
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = _slice(v, rank, world)
        else:
            n = v.shape[0] // world
            out[k] = v[rank * n : (rank + 1) * n]
    return out


class _Epoch:
    def __init__(self, dm: SynthData) -> None:
        self.dm = dm

    def __len__(self) -> int:
        return self.dm.n_batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        trainer = self.dm.trainer
        epoch, rank, world = trainer.current_epoch, trainer.global_rank, trainer.world_size
        for i in range(self.dm.n_batches):
            batch = make_batch(1000 * epoch + i, self.dm.b, self.dm.bc)
            yield _slice(batch, rank, world) if world > 1 else batch


class SynthData(LightningDataModule):
    """`n_batches` per epoch of global batch (b noisy, bc clean), different each epoch, split over ranks."""

    def __init__(self, n_batches: int = 3, b: int = 8, bc: int = 8) -> None:
        super().__init__()
        self.n_batches, self.b, self.bc = n_batches, b, bc

    def train_dataloader(self) -> Any:
        return _Epoch(self)


def trainer(**kw: Any) -> Trainer:
    opts = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                use_distributed_sampler=False, deterministic=True)  # fmt: skip
    return Trainer(**(opts | kw))


def fit(model_fn: Any, *, seed: int = 0, data: SynthData | None = None, **kw: Any) -> Any:
    """Seed, build the model, fit it, return the model (trainer at `model.trainer`)."""
    seed_everything(seed, verbose=False)
    model = model_fn()
    trainer(**kw).fit(model, datamodule=data or SynthData())
    return model


def state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    worst = 0.0
    for k, v in a.items():
        if v.is_floating_point():
            worst = max(worst, float((v - b[k]).norm() / b[k].norm().clamp_min(1e-30)))
    return worst
