"""The data module's loaders: the paired noisy + clean training streams, evaluation, the label report, predict.

`Loaders` is the loader half of `NoisyLabelDataModule` (lnl.data.datamodule), which builds the labels
(`lnl.data.labels`) and holds the settings; the training loaders collate into `lnl.data.batch` records.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from lnl.data.batch import Batch, as_batch, collate_stream, view_keys
from lnl.data.device_views import DEVICE_FAMILIES, DeviceViews
from lnl.data.loading import EpochSampler, LabelledImages
from lnl.data.new_images import NewImages
from lnl.data.seed import run_seed
from lnl.data.source_base import ImageSet
from lnl.data.sources import clothing_balanced_subsample
from lnl.data.transforms import Transforms, build_transforms
from lnl.validation import one_of


def _balanced_epoch(ids: np.ndarray, labels: np.ndarray, size: int, seed: int, epoch: int) -> np.ndarray:
    """The class-balanced per-epoch subsample of `ids` (identical on every rank: a function of seed and epoch)."""
    return ids[clothing_balanced_subsample(labels, size, seed, epoch)]


class Loaders:
    """Loaders over the built labels (`self.labels`), for the settings in `self.hparams`."""

    device_views: DeviceViews | None = None  # set by train_dataloader when the views are drawn on the device

    @property
    def device_capable(self) -> bool:
        """Whether the training images are one in-memory uint8 array of a family with device views (whose crops
        pad with zeros: `crop_padding: reflect` stays in the loader)."""
        return (
            self.train_set.images is not None
            and self.source.family in DEVICE_FAMILIES
            and self.hparams.crop_padding == "constant"
        )

    @property
    def num_workers(self) -> int:
        """`num_workers`, or its default: min(8, cpus - 1) for file-backed images, 0 for in-memory ones."""
        if self.hparams.num_workers is not None:
            return self.hparams.num_workers
        return 0 if self.train_set.images is not None else max(0, min(8, (os.cpu_count() or 1) - 1))

    def augments_on_device(self) -> bool:
        """`augment_on` resolved: `auto` is device for in-memory CIFAR / Digits images trained on CUDA."""
        mode = self.hparams.augment_on
        if mode == "auto":
            device = getattr(getattr(self.trainer, "strategy", None), "root_device", None)
            return device is not None and device.type == "cuda" and self.device_capable
        return mode == "device"

    def _transforms(self) -> Transforms:
        source = self.source
        return build_transforms(source.family, mean=source.mean, std=source.std, image_size=source.image_size,
                                padding_mode=self.hparams.crop_padding)  # fmt: skip

    def _dist(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(
        self,
        dataset: Dataset,
        sampler: EpochSampler,
        batch_size: int,
        drop_last: bool,
        view: str | None = None,
    ) -> DataLoader:
        """A training stream's loader (`view`: its one-view key; it collates into `Stream` records) or an
        evaluation loader (dict batches). Workers persist across epochs for the training streams only: an
        evaluation loader is built anew for each `trainer.test`, and re-creating loaders whose workers persist
        while memory is pinned is a known PyTorch instability (pytorch/pytorch#91252, which Lightning warns
        about)."""
        train = view is not None
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
            num_workers=self.num_workers, persistent_workers=train and self.num_workers > 0,
            pin_memory=torch.cuda.is_available(), collate_fn=partial(collate_stream, view=view) if train else None,
        )  # fmt: skip

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A training batch as a `Batch` record (its streams collated with the host flag `has_true`: no device
        sync in a step); with device views, draw each sample's augmentation on the host from (epoch, index)."""
        if isinstance(batch, dict) and "noisy" in batch:
            batch = as_batch(batch)
        if isinstance(batch, Batch) and self.device_views is not None:
            batch = self.device_views.plan(batch)
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With device views, make each training stream's views on the device (the loader path's views)."""
        if self.device_views is not None and isinstance(batch, Batch):
            batch = self.device_views.apply(batch)
        return batch

    def train_dataloader(self) -> Any:
        hp, req, t = self.hparams, self.requirements, self._transforms()
        rank, world = self._dist()
        names = dict(zip(view_keys(req.train_views), req.train_views))  # key -> view: strong2 -> strong
        views: Any = {key: t.get(view) for key, view in names.items()}
        views = views if len(views) > 1 else views[next(iter(views))]
        clean_view, noisy_key = req.clean_view, next(iter(names))
        self.device_views = None
        if self.augments_on_device():
            source, seed = self.source, run_seed()
            streams = {"noisy": (seed, names), "clean": (seed + 1, {clean_view: clean_view})}
            self.device_views = DeviceViews(
                self.train_set.images, source.family, source.image_size, source.mean, source.std, streams
            )
            views = None  # the loader hands out labels and (epoch, index); views are drawn on the device
        train_ids = {"noisy": self.noisy_index, "clean": self.clean_index,
                     "both": np.concatenate([self.noisy_index, self.clean_index])}[hp.train_on]  # fmt: skip
        noisy_set = LabelledImages(
            self.train_set, self.given_labels, self.true_labels, views, seed=run_seed()
        )
        per_epoch = None
        if hp.samples_per_epoch:
            per_epoch = partial(
                _balanced_epoch, train_ids, self.given_labels[train_ids], hp.samples_per_epoch, hp.split_seed
            )
        length = (
            -(-self.sizing.samples_per_epoch // world) if self.sizing and hp.train_on == "noisy" else None
        )
        sampler = EpochSampler(train_ids, seed=run_seed(), rank=rank, world_size=world, per_epoch=per_epoch,
                               num_samples_per_rank=length)  # fmt: skip
        noisy = self._loader(noisy_set, sampler, hp.batch_size, len(sampler) >= hp.batch_size, noisy_key)
        position, self.resume_position = self.resume_position, None
        if position is not None:  # a mid-epoch checkpoint: go on at the next batch of the same epoch
            sampler.resume_at(position[0], position[1] * hp.batch_size)
        if not req.needs_clean:
            return {"noisy": noisy}
        clean_bs = hp.clean_batch_size or hp.batch_size
        clean_t = None if self.device_views is not None else t.get(clean_view)
        clean_set = LabelledImages(self.train_set, self.given_labels, None, clean_t, seed=run_seed() + 1)
        n_batches = max(len(noisy), 1)
        clean_sampler = EpochSampler(
            self.clean_index, seed=run_seed() + 1, rank=rank, world_size=world,
            num_samples_per_rank=n_batches * clean_bs,
        )  # fmt: skip
        clean = self._loader(clean_set, clean_sampler, clean_bs, True, clean_view)
        if position is not None:
            clean_sampler.resume_at(position[0], position[1] * clean_bs)
        return CombinedLoader({"noisy": noisy, "clean": clean}, mode="max_size_cycle")

    def _eval_loader(self, images: ImageSet, labels: np.ndarray, ids: np.ndarray) -> DataLoader:
        dataset = LabelledImages(images, labels, None, self._transforms().eval)
        sampler = EpochSampler(ids, seed=0, shuffle=False, **dict(zip(("rank", "world_size"), self._dist())))
        return self._loader(dataset, sampler, self.hparams.eval_batch_size, drop_last=False)

    def val_dataloader(self) -> DataLoader | list:
        if len(self.val_index) == 0:
            return []
        return self._eval_loader(self.train_set, self.given_labels, self.val_index)

    def test_dataloader(self) -> DataLoader | list:
        if not self.has_test_set:
            return []
        return self._eval_loader(self.test_set, self.test_set.labels, np.arange(len(self.test_set)))

    @property
    def has_test_set(self) -> bool:
        return len(self.test_set) > 0

    def report_dataloader(self, batch_size: int, part: Literal["train", "test"] = "train") -> DataLoader:
        """Every used training sample (or the test set) in index order, eval transforms, one process."""
        if part == "test":
            images, labels, ids = self.test_set, self.test_set.labels, np.arange(len(self.test_set))
        else:
            images, labels, ids = self.train_set, self.given_labels, self.labels.used_index
        dataset = LabelledImages(images, labels, None, self._transforms().eval)
        sampler = EpochSampler(ids, seed=0, shuffle=False)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=self.num_workers)

    def predict_dataloader(self) -> DataLoader:
        """`predict_images` (new images), or the split named by `predict_on`; items carry index (and path)."""
        hp = self.hparams
        if self.predict_paths is not None:
            mode = "L" if self.in_chans == 1 else "RGB"
            dataset = NewImages(self.predict_paths, self._transforms().eval, mode)
            return DataLoader(dataset, batch_size=hp.eval_batch_size, num_workers=self.num_workers)
        if hp.predict_on == "test":
            return self.test_dataloader()
        ids = {"noisy": self.noisy_index, "clean": self.clean_index, "val": self.val_index,
               "train": self.labels.used_index}  # fmt: skip
        one_of("data.predict_on", hp.predict_on, ("test", *ids))
        return self._eval_loader(self.train_set, self.given_labels, ids[hp.predict_on])
