"""Datasets and samplers behind the loaders: items as dicts, (epoch, index)-seeded augmentations, sharding."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from lnl.data.sources import ImageSet


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 999_983 + index * 7_919) % (2**63 - 1)


class LabelledImages(Dataset):
    """Images of one part with the labels to train on; items are dicts (docs/design.md, "Data").

    The sampler yields (epoch, index) pairs; each sample's augmentation is drawn from torch's RNG seeded with
    (seed, epoch, index) inside `fork_rng`, so a run does not depend on the worker count and resumes exactly.
    With ``transforms=None`` an item carries no image but its ``epoch``: the views are drawn on the training
    device from (seed, epoch, index) (`lnl.data.device_views`).
    """

    def __init__(
        self,
        images: ImageSet,
        labels: np.ndarray,
        true_labels: np.ndarray | None,
        transforms: dict[str, Callable] | Callable | None,
        seed: int = 0,
    ) -> None:
        self.images, self.seed = images, seed
        self.labels = torch.tensor(labels, dtype=torch.long)  # a copy: label arrays may be read-only views
        self.true_labels = None if true_labels is None else torch.tensor(true_labels, dtype=torch.long)
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if self.transforms is None:
            item = {"y": self.labels[index], "index": index, "epoch": epoch}
            return item if self.true_labels is None else item | {"y_true": self.true_labels[index]}
        image = self.images.image(index)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(_sample_seed(self.seed, epoch, index))
            if isinstance(self.transforms, dict):
                x = {view: t(image) for view, t in self.transforms.items()}
            else:
                x = self.transforms(image)
        item = {"x": x, "y": self.labels[index], "index": index}
        if self.true_labels is not None:
            item["y_true"] = self.true_labels[index]
        return item


class EpochSampler(DistributedSampler):
    """Shuffled (epoch, index) pairs from a fixed index set, sharded over ranks like `DistributedSampler`.

    `num_samples_per_rank` makes the stream longer than one pass (successive permutations), so a cycled clean
    stream never repeats an order inside an epoch; `per_epoch` replaces the index set each epoch (Clothing1M's
    class-balanced subsample). `resume_at(epoch, samples)` skips the first `samples` of that epoch's stream once
    (a mid-epoch resume continues at the next batch with the same order); `len` stays the full epoch.
    """

    def __init__(
        self,
        indices: np.ndarray,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        num_samples_per_rank: int | None = None,
        per_epoch: Callable[[int], np.ndarray] | None = None,
    ) -> None:
        self.indices, self.seed, self.rank, self.num_replicas = np.asarray(indices), seed, rank, world_size
        self.shuffle, self.epoch, self.per_epoch = shuffle, 0, per_epoch
        base = len(per_epoch(0)) if per_epoch else len(self.indices)
        self.num_samples = num_samples_per_rank or -(-base // world_size)
        self.total_size = self.num_samples * world_size
        self._skip: tuple[int, int] | None = None

    def resume_at(self, epoch: int, samples: int) -> None:
        """Start this sampler at epoch `epoch`, leaving out the first `samples` of it (once)."""
        self.set_epoch(epoch)
        self._skip = (epoch, samples)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = self.per_epoch(self.epoch) if self.per_epoch else self.indices
        rng = np.random.default_rng([self.seed, self.epoch])
        order: list[np.ndarray] = []
        while sum(map(len, order)) < self.total_size:
            order.append(indices[rng.permutation(len(indices))] if self.shuffle else indices)
        stream = np.concatenate(order)[: self.total_size][self.rank :: self.num_replicas]
        if self._skip is not None and self._skip[0] == self.epoch:
            stream = stream[self._skip[1] :]
        self._skip = None
        for index in stream:
            yield self.epoch, int(index)

    def __len__(self) -> int:
        return self.num_samples
