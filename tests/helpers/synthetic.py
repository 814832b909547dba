"""Synthetic training batches for ANY method and a small Trainer runner (no tests here).

`SynthData` serves the batch a method asks for through its class attributes, as `NoisyLabelDataModule` does:
a `lnl.data.batch.Batch` whose noisy stream has the method's views (repeated names numbered: ``("strong",
"strong")`` -> strong, strong2), labels, true labels and indices, plus a clean stream when the method
`needs_clean`. Every (epoch, batch) is new and seeded, so two runs (and a resumed run) see the same data; with R DDP
ranks each rank gets its contiguous block of the global batch (one process with batch b = R ranks with b / R).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from lightning_utilities.core.apply_func import apply_to_collection

from lnl.data.batch import Batch, DataRequirements, synthetic_batch

C = 4


def sgd(lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4) -> Any:
    return functools.partial(torch.optim.SGD, lr=lr, momentum=momentum, weight_decay=weight_decay)


def make_batch(
    seed: int,
    b: int,
    bc: int,
    size: int = 8,
    views: tuple[str, ...] = ("weak",),
    clean: bool = True,
    position: int = 0,
) -> Batch:
    """One global batch (b noisy with 40% flipped labels, bc clean) of `lnl.data.batch.synthetic_batch`."""
    requirements = DataRequirements(needs_clean=clean, train_views=tuple(views))
    return synthetic_batch(requirements, batch_size=b, clean_batch_size=bc, image_size=size, num_classes=C,
                           seed=seed, position=position)  # fmt: skip


def _slice(batch: Batch, rank: int, world: int) -> Batch:
    """Contiguous block `rank` of every tensor (so odd positions stay odd: corruption picks the same samples)."""

    def block(v: torch.Tensor) -> torch.Tensor:
        n = v.shape[0] // world
        return v[rank * n : (rank + 1) * n]

    return apply_to_collection(batch, torch.Tensor, block)


class _Epoch:
    def __init__(self, dm: SynthData) -> None:
        self.dm = dm

    def __len__(self) -> int:
        return self.dm.n_batches

    def __iter__(self) -> Iterator[Batch]:
        dm, trainer = self.dm, self.dm.trainer
        epoch, rank, world = trainer.current_epoch, trainer.global_rank, trainer.world_size
        method = type(trainer.lightning_module)
        views, clean = tuple(method.train_views), bool(method.needs_clean)
        for i in range(dm.n_batches):
            batch = make_batch(1000 * epoch + i, dm.b, dm.bc, dm.size, views, clean, position=i)
            if dm.shuffle_true_labels:  # a fixed permutation per batch; the training labels untouched
                perm = torch.randperm(dm.b, generator=torch.Generator().manual_seed(i))
                batch = batch._replace(noisy=batch.noisy._replace(y_true=batch.noisy.y_true[perm]))
            yield _slice(batch, rank, world) if world > 1 else batch


class SynthData(LightningDataModule):
    """`n_batches` per epoch of global batch (b noisy, bc clean), shaped for the method being fitted."""

    shuffle_true_labels = False

    def __init__(self, n_batches: int = 3, b: int = 8, bc: int = 8, size: int = 8) -> None:
        super().__init__()
        self.n_batches, self.b, self.bc, self.size = n_batches, b, bc, size
        self.train_size = n_batches * b  # distinct noisy `index` values (DML preallocates its bank with it)

    def train_dataloader(self) -> Any:
        return _Epoch(self)


class ShuffledTruthData(SynthData):
    """`SynthData` whose `y_true` are permuted: a method that never trains on them gives the same parameters."""

    shuffle_true_labels = True


def trainer(**kw: Any) -> Trainer:
    opts = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                use_distributed_sampler=False, deterministic=True)  # fmt: skip
    return Trainer(**(opts | kw))


def fit(
    model_fn: Any, *, seed: int = 0, data: SynthData | None = None, ckpt_path: Any = None, **kw: Any
) -> Any:
    """Seed, build the model, fit it (Trainer options in `kw`), return the model (trainer at `model.trainer`)."""
    seed_everything(seed, verbose=False)
    model = model_fn()
    trainer(**kw).fit(model, datamodule=data or SynthData(), ckpt_path=ckpt_path)
    return model


class SaveRankZeroState(Callback):
    """At the end of a (DDP) fit, rank 0 saves {"state": its state_dict, "world": world size} to `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: Trainer, module: Any) -> None:
        if trainer.global_rank == 0:
            torch.save({"state": state(module), "world": trainer.world_size}, self.path)


def state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest ‖a_k − b_k‖ / ‖b_k‖ over the floating-point entries of two state dicts."""
    worst = 0.0
    for k, v in a.items():
        if v.is_floating_point():
            worst = max(worst, float((v - b[k]).norm() / b[k].norm().clamp_min(1e-30)))
    return worst


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bit-exact equality of two state dicts (same keys, dtypes and values, integer buffers included)."""
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert v.dtype == b[k].dtype and torch.equal(v, b[k]), k


def float64_one_step(make: Callable[[], Any]) -> tuple[Any, Any, Batch]:
    """A hand-written float64 oracle's start: the method fitted one step in float64 on `SynthData(1)`, a fresh copy
    `ref` from the same seed (float64, train mode) and that step's batch (8 noisy, 8 clean)."""
    model = fit(make, precision="64-true", data=SynthData(1))
    seed_everything(0, verbose=False)
    return model, make().double().train(), make_batch(0, 8, 8)
