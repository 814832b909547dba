"""`NoisyLabelDataModule`: seeded split and noise, paired noisy + clean streams (docs/design.md, "Data")."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from lnl.data.device_views import DEVICE_FAMILIES, DeviceViews
from lnl.data.file_sources import FolderFiles
from lnl.data.loading import EpochSampler, LabelledImages
from lnl.data.longtail import longtail_subsample
from lnl.data.new_images import NewImages, list_new_images
from lnl.data.noise import NoiseSpec, apply_noise, read_label_file, realized_rate
from lnl.data.sizing import Sizing, fit_to_data
from lnl.data.sources import ImageSet, clothing_balanced_subsample, create_source
from lnl.data.splits import make_split
from lnl.data.transforms import build_transforms
from lnl.errors import ConfigError
from lnl.report.class_names import write_classes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataRequirements:
    """What a method asks of the data: a clean stream, the train views, the clean-set augmentation."""

    needs_clean: bool = False
    train_views: tuple[str, ...] = ("weak",)
    clean_augment: str = "weak"

    @classmethod
    def of(cls, module: Any) -> DataRequirements:
        return cls(
            getattr(module, "needs_clean", False),
            tuple(getattr(module, "train_views", ("weak",))),
            getattr(module, "clean_augment", "weak"),
        )


def _balanced_epoch(ids: np.ndarray, labels: np.ndarray, size: int, seed: int, epoch: int) -> np.ndarray:
    """The class-balanced per-epoch subsample of `ids` (identical on every rank: a function of seed and epoch)."""
    return ids[clothing_balanced_subsample(labels, size, seed, epoch)]


def _concat(sets: list[ImageSet]) -> ImageSet:
    """One ImageSet holding `sets` one after another (all in memory, or all file-backed)."""
    labels = np.concatenate([s.labels for s in sets])
    true_labels = np.concatenate([s.true_labels for s in sets])
    if all(s.paths is not None for s in sets):
        return ImageSet(labels, true_labels, paths=[p for s in sets for p in s.paths])
    return ImageSet(labels, true_labels, images=np.concatenate([s.images for s in sets]))


class NoisyLabelDataModule(LightningDataModule):
    """Source -> long tail -> stratified clean / val / noisy split -> seeded noise -> loaders.

    See docs/design.md, "Data".

    Args:
        dataset: source name (`cifar10`, `cifar100`, `clothing1m`, `digits`, `folder_csv`).
        root / download / source_kwargs: where the source lives (downloads only when `download: true`).
        noise: the noise protocol applied to the noisy set (and, by the same noise process, to val when
            `val_labels: noisy`).
        clean_per_class / val_per_class: sizes of the stratified clean and validation sets.
        val_labels: `clean` for methods allowed clean data, `noisy` for the honest no-clean-data protocol (DML).
        longtail_ratio: imbalance ratio ρ of the long-tailed subsample (None: balanced).
        train_on: which part forms the training stream of single-stream methods: `noisy`, `clean` (a CE
            reference trained on the clean set alone) or `both` (noisy set plus clean set with clean labels).
        split_seed / noise_seed: seeds of the split and of the noise, independent of the training seed.
        samples_per_epoch: class-balanced per-epoch subsample of the noisy set (Clothing1M).
        source_kwargs: extra options of the source (e.g. Clothing1M's `strict_sizes`).
        folder: your own images' CSV files and image size (`dataset: folder_csv`; see `FolderFiles`).
        predict_on: what `lnl predict` predicts: a split (`test`, `train` = every used training sample, `noisy`,
            `clean`, `val`); ignored when `predict_images` is set.
        predict_images: a folder, or a CSV whose first column lists image paths, of new images to predict.
        num_workers: loader processes; None: min(8, cpus - 1) for file-backed images (Clothing1M, folder_csv),
            0 for in-memory ones.
        augment_on: where the training views are drawn: `device` (in-memory uint8 images kept on the training
            device, views drawn there in batches: `lnl.data.device_views`), `loader` (per sample in the loader
            processes) or `auto` (device for in-memory CIFAR / Digits images when training on CUDA, else loader).
        scale_to_data: `val_per_class` and `batch_size` are upper limits fitted to a small dataset, epochs get at
            least 8 steps, and a class with too few images is refused (`lnl.data.sizing`; own images).
        crop_padding: how the random crop of the training views pads (`constant` zeros, or `reflect` as the
            official MW-Net scripts: `F.pad(x, (4, 4, 4, 4), mode='reflect')` then `RandomCrop(32)`).
    """

    def __init__(
        self,
        dataset: str = "digits",
        root: str = "data",
        download: bool = False,
        noise: NoiseSpec | None = None,
        clean_per_class: int = 0,
        val_per_class: int = 0,
        val_labels: Literal["clean", "noisy"] = "clean",
        longtail_ratio: float | None = None,
        train_on: Literal["noisy", "clean", "both"] = "noisy",
        batch_size: int = 128,
        clean_batch_size: int | None = None,
        eval_batch_size: int = 512,
        num_workers: int | None = None,
        split_seed: int = 0,
        noise_seed: int = 0,
        samples_per_epoch: int | None = None,
        source_kwargs: dict[str, Any] | None = None,
        folder: FolderFiles | None = None,
        predict_on: Literal["test", "train", "noisy", "clean", "val"] = "test",
        predict_images: str | None = None,
        augment_on: Literal["auto", "device", "loader"] = "auto",
        scale_to_data: bool = False,
        crop_padding: Literal["constant", "reflect"] = "constant",
    ) -> None:
        super().__init__()
        if crop_padding not in ("constant", "reflect"):
            raise ConfigError(f"data.crop_padding = {crop_padding!r}: allowed are 'constant', 'reflect'")
        self.noise = noise or NoiseSpec()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ConfigError(f"data.{name} = {value}: must be a positive integer")
        if augment_on not in ("auto", "device", "loader"):
            raise ConfigError(f"data.augment_on = {augment_on!r}: allowed are auto, device, loader")
        if num_workers is not None and num_workers < 0:
            raise ConfigError(f"data.num_workers = {num_workers}: must be >= 0 (or null for the default)")
        self.save_hyperparameters(ignore=["noise", "folder"])
        kwargs = dict(source_kwargs or {})
        if folder is not None:
            if dataset != "folder_csv":
                raise ConfigError(
                    f"data.folder is set for dataset {dataset!r}: it describes dataset: folder_csv"
                )
            kwargs |= (folder if isinstance(folder, FolderFiles) else FolderFiles(**folder)).as_kwargs()
        self.source = create_source(dataset, root, download=download, **kwargs)
        if dataset == "folder_csv" and self.noise.kind != "none":
            log.warning(
                "lnl: data.noise.kind = %s adds synthetic noise on top of your labels; set data.noise.kind: none "
                "to learn from them as given", self.noise.kind,
            )  # fmt: skip
        self.noise.validate(self.source.num_classes)
        self.requirements = DataRequirements()
        self.resume_position: tuple[int, int] | None = None  # (epoch, batches done) of a mid-epoch checkpoint
        self.predict_paths = list_new_images(predict_images) if predict_images else None  # bad paths fail now
        self.sizing = self._fit_to_data() if scale_to_data else None
        self._build()  # split and noise now, so that bad settings fail before any training machinery starts
        if augment_on == "device" and not self.device_capable:
            raise ConfigError(
                f"data.augment_on = 'device' for dataset {dataset!r}: only in-memory images of the "
                f"{' / '.join(DEVICE_FAMILIES)} families with crop_padding 'constant' can be augmented on the "
                "device; use loader or auto"
            )
        self.device_views: DeviceViews | None = (
            None  # set by setup("fit") when the views are drawn on the device
        )

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

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def in_chans(self) -> int:
        return self.source.in_chans

    # ------------------------------------------------------------------ building the labelled parts
    def _fit_to_data(self) -> Sizing:
        """Scale the hold-out and batch size down to the data (`lnl.data.sizing`); the chosen values replace the
        configured ones in `hparams` (and so in the run's hparams.yaml)."""
        hp, parts = self.hparams, self.source.predefined_parts()
        labels = (parts["noisy"] if parts is not None else self.source.train()).labels
        counts = np.bincount(labels, minlength=self.num_classes)
        held = hp.val_labels == "noisy" or parts is None
        what = f"data.folder.train_csv = {self.source.train_csv}" if hp.dataset == "folder_csv" else "data"
        sizing = fit_to_data(
            counts, val_per_class=hp.val_per_class if held else 0, batch_size=hp.batch_size,
            reserved_per_class=hp.clean_per_class if parts is None else 0,
            names=self.source.class_names, what=what,
        )  # fmt: skip
        if held:
            hp.val_per_class = sizing.val_per_class
        hp.batch_size = sizing.batch_size
        log.warning(sizing.describe(counts))
        return sizing

    def use_requirements(self, requirements: DataRequirements) -> None:
        """Take what a method asks of the data; ConfigError when it needs a clean set and there is none (the
        CLI calls this before the run directory exists)."""
        self.requirements = requirements
        if requirements.needs_clean and len(self.clean_index) == 0:
            raise ConfigError(
                "data.clean_per_class = 0: this method needs a clean set; give a positive count"
            )

    def setup(self, stage: str) -> None:
        if self.trainer is not None and self.trainer.lightning_module is not None:
            self.use_requirements(DataRequirements.of(self.trainer.lightning_module))
        else:
            self.use_requirements(self.requirements)
        if self.trainer is not None and stage == "fit":
            log_dir = self.trainer.log_dir  # a collective call under DDP: every rank asks
            if self.trainer.is_global_zero:
                self.write_labels(log_dir)

    def _build(self) -> None:
        hp, source = self.hparams, self.source
        self.train_set, self.test_set = source.train(), source.test()
        self.train_size = len(self.train_set)
        labels = self.train_set.labels
        parts = source.predefined_parts()
        if parts is not None:
            self._build_predefined(parts)
            return
        subset = longtail_subsample(labels, hp.longtail_ratio, hp.split_seed) if hp.longtail_ratio else None
        split = make_split(
            labels,
            clean_per_class=hp.clean_per_class,
            val_per_class=hp.val_per_class,
            seed=hp.split_seed,
            subset=subset,
        )
        given = labels.copy()
        # Noisy val labels come from the SAME noise process as the training labels (one call: same transition
        # matrix / random-flip map / IDN projection and flip-rate law); only the per-sample draws are val's own.
        # The noisy set's labels are those of corrupting it alone, so they do not depend on `val_labels`.
        parts = [split.noisy] + ([split.val] if hp.val_labels == "noisy" else [])
        for ids, noisy in zip(parts, self._corrupt(parts, hp.noise_seed)):
            given[ids] = noisy
        self.noisy_index, self.clean_index, self.val_index = split.noisy, split.clean, split.val
        self.given_labels, self.true_labels = given, self.train_set.true_labels
        self._finish()

    def _corrupt(self, parts: list[np.ndarray], seed: int) -> list[np.ndarray]:
        """Noisy labels for each index array of `parts` (training part first), drawn by one noise process."""
        spec, source, labels = self.noise, self.source, self.train_set.labels
        ids = np.concatenate(parts)
        if spec.kind == "asymmetric" and source.asymmetric_map() is None:
            raise ConfigError(
                f"noise.kind = 'asymmetric' for dataset {self.hparams.dataset!r}: no semantic class map is defined "
                "for it (cifar10, cifar100 have one); use symmetric, pairflip or random_flip"
            )
        features = self.train_set.raw_features(ids) if spec.kind == "instance" else None
        file_labels = None
        if spec.kind == "file":
            full = read_label_file(
                spec.file, key=spec.file_key, num_classes=source.num_classes,
                expected_len=len(labels), clean_labels=labels,
            )  # fmt: skip
            file_labels = full[ids]
        noisy = apply_noise(
            spec, labels[ids], source.num_classes, seed=seed,
            class_map=source.asymmetric_map() if spec.kind == "asymmetric" else None,
            features=features, file_labels=file_labels, parts=[len(p) for p in parts],
        )  # fmt: skip
        return np.split(noisy, np.cumsum([len(p) for p in parts])[:-1])

    def _build_predefined(self, parts: dict[str, ImageSet]) -> None:
        if self.noise.kind != "none":
            raise ConfigError(
                f"data.noise.kind = {self.noise.kind!r} for {self.hparams.dataset}: its labels are already noisy; "
                "use kind: none"
            )
        # Concatenate noisy, clean and val parts into one indexable train set. With `val_labels: noisy` the
        # dataset's clean val list is not used; a noisy hold-out from the noisy part replaces it.
        noisy, clean, val = parts["noisy"], parts["clean"], parts["val"]
        offsets = np.cumsum([0, len(noisy), len(clean)])
        self.train_set = _concat([noisy, clean, val])
        self.train_size = len(self.train_set)
        self.noisy_index = np.arange(len(noisy))
        self.clean_index = offsets[1] + np.arange(len(clean))
        self.val_index = offsets[2] + np.arange(len(val))
        if (
            self.hparams.val_labels == "noisy"
        ):  # no clean data at all: hold out a noisy val set, stratified by ỹ
            if self.hparams.val_per_class < 1:
                raise ConfigError(
                    f"data.val_per_class = {self.hparams.val_per_class} with val_labels: noisy on "
                    f"{self.hparams.dataset}: give a positive count to hold out a noisy validation set"
                )
            held = make_split(noisy.labels, clean_per_class=0, val_per_class=self.hparams.val_per_class,
                              seed=self.hparams.split_seed, num_classes=self.num_classes)  # fmt: skip
            self.noisy_index, self.val_index = held.noisy, held.val
        self.given_labels, self.true_labels = self.train_set.labels, self.train_set.true_labels
        self._finish()

    def _finish(self) -> None:
        for name, a, b in (("noisy/clean", self.noisy_index, self.clean_index),
                           ("noisy/val", self.noisy_index, self.val_index),
                           ("clean/val", self.clean_index, self.val_index)):  # fmt: skip
            assert not np.intersect1d(a, b).size, f"{name} parts overlap"
        self.realized_rate = realized_rate(
            self.true_labels[self.noisy_index], self.given_labels[self.noisy_index]
        )
        self.labels_sha256 = hashlib.sha256(self.labels_csv().encode()).hexdigest()
        log.info("noisy labels: realized rate %.4f, sha256 %s", self.realized_rate, self.labels_sha256)

    # ------------------------------------------------------------------ persistence
    def labels_csv(self) -> str:
        """`index,split,true_label,noisy_label` for every used training sample (the run's `labels.csv`)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["index", "split", "true_label", "noisy_label"])
        rows = [(i, part) for part, ids in (("noisy", self.noisy_index), ("clean", self.clean_index),
                                            ("val", self.val_index)) for i in ids]  # fmt: skip
        for i, part in sorted(rows):
            writer.writerow([i, part, int(self.true_labels[i]), int(self.given_labels[i])])
        return out.getvalue()

    def write_labels(self, directory: str | None) -> None:
        """Write labels.csv and classes.csv (class id -> name) into the run directory (rank zero)."""
        if directory:
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, "labels.csv"), "w") as f:
                f.write(self.labels_csv())
            write_classes(self.source.class_names, directory)

    def settings(self) -> dict[str, Any]:
        """The settings that decide the labels, by config key (`noise.rate`, `split_seed`, ...): a resume
        with other values is refused naming the key (lnl/run/preflight.py)."""
        hp = self.hparams
        keys = ("dataset", "clean_per_class", "val_per_class", "val_labels", "longtail_ratio", "split_seed",
                "noise_seed", "source_kwargs")  # fmt: skip
        return {**{k: hp[k] for k in keys}, **{f"noise.{k}": v for k, v in vars(self.noise).items()}}

    def state_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings(),
            "labels_sha256": self.labels_sha256,
            "noisy_index": torch.as_tensor(self.noisy_index),
            "clean_index": torch.as_tensor(self.clean_index),
            "val_index": torch.as_tensor(self.val_index),
            "given_labels": torch.as_tensor(self.given_labels),
            "position": self._position(),
        }

    def _position(self) -> tuple[int, int] | None:
        """(epoch, training batches done in it) while fitting: where a resume from this checkpoint continues."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return None
        return trainer.current_epoch, int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("labels_sha256") != self.labels_sha256:
            raise ConfigError(
                f"checkpoint labels sha256 = {state.get('labels_sha256')!r} differ from this config's "
                f"{self.labels_sha256!r}: resume with the data settings (split_seed, noise_seed, noise, "
                "per-class counts) the checkpoint was trained with"
            )
        self.resume_position = state.get("position")

    # ------------------------------------------------------------------ loaders
    def _transforms(self) -> Any:
        source = self.source
        return build_transforms(source.family, mean=source.mean, std=source.std, image_size=source.image_size,
                                padding_mode=self.hparams.crop_padding)  # fmt: skip

    def _dist(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _seed(self) -> int:
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def _loader(
        self, dataset: Dataset, sampler: EpochSampler, batch_size: int, drop_last: bool, train: bool = False
    ) -> DataLoader:
        """Workers persist across epochs for the training streams only: an evaluation loader is built anew for
        each `trainer.test`, and re-creating loaders whose workers persist while memory is pinned is a known
        PyTorch instability (pytorch/pytorch#91252, which Lightning warns about)."""
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
            num_workers=self.num_workers, persistent_workers=train and self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )  # fmt: skip

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Flag on the host whether a train stream carries true labels (`has_true`): no device sync in a step;
        with device views, draw each sample's augmentation on the host from its (epoch, index)."""
        if isinstance(batch, dict):
            for stream in batch.values():
                if isinstance(stream, dict) and "y_true" in stream:
                    stream["has_true"] = bool((stream["y_true"] >= 0).any())
            if self.device_views is not None:
                self.device_views.plan(batch)
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With device views, make each training stream's views on the device (the loader path's `x`)."""
        if self.device_views is not None and isinstance(batch, dict):
            self.device_views.apply(batch)
        return batch

    def train_dataloader(self) -> Any:
        hp, req, t = self.hparams, self.requirements, self._transforms()
        rank, world = self._dist()
        names: dict[str, str] = {}
        # a repeated view gets a numbered key: ("strong", "strong") -> strong, strong2
        for i, view in enumerate(req.train_views):
            n = req.train_views[:i].count(view)
            names[view if n == 0 else f"{view}{n + 1}"] = view
        views: Any = {key: getattr(t, view) for key, view in names.items()}
        views = views if len(views) > 1 else views[next(iter(views))]
        clean_view = "autoaugment" if req.clean_augment == "autoaugment" else "weak"
        self.device_views = None
        if self.augments_on_device():
            source = self.source
            streams = {"noisy": (self._seed(), names if len(names) > 1 else {"": req.train_views[0]}),
                       "clean": (self._seed() + 1, {"": clean_view})}  # fmt: skip
            self.device_views = DeviceViews(
                self.train_set.images, source.family, source.image_size, source.mean, source.std, streams
            )
            views = None  # the loader hands out labels and (epoch, index); views are drawn on the device
        train_ids = {"noisy": self.noisy_index, "clean": self.clean_index,
                     "both": np.concatenate([self.noisy_index, self.clean_index])}[hp.train_on]  # fmt: skip
        noisy_set = LabelledImages(
            self.train_set, self.given_labels, self.true_labels, views, seed=self._seed(),
        )  # fmt: skip
        per_epoch = None
        if hp.samples_per_epoch:
            per_epoch = partial(
                _balanced_epoch, train_ids, self.given_labels[train_ids], hp.samples_per_epoch, hp.split_seed
            )
        length = (
            -(-self.sizing.samples_per_epoch // world) if self.sizing and hp.train_on == "noisy" else None
        )
        sampler = EpochSampler(train_ids, seed=self._seed(), rank=rank, world_size=world, per_epoch=per_epoch,
                               num_samples_per_rank=length)  # fmt: skip
        noisy = self._loader(noisy_set, sampler, hp.batch_size, len(sampler) >= hp.batch_size, train=True)
        position, self.resume_position = self.resume_position, None
        if position is not None:  # a mid-epoch checkpoint: go on at the next batch of the same epoch
            sampler.resume_at(position[0], position[1] * hp.batch_size)
        if not req.needs_clean:
            return {"noisy": noisy}
        clean_bs = hp.clean_batch_size or hp.batch_size
        clean_t = None if self.device_views is not None else t.get(clean_view)
        clean_set = LabelledImages(self.train_set, self.given_labels, None, clean_t, seed=self._seed() + 1)
        n_batches = max(len(noisy), 1)
        clean_sampler = EpochSampler(
            self.clean_index, seed=self._seed() + 1, rank=rank, world_size=world,
            num_samples_per_rank=n_batches * clean_bs,
        )  # fmt: skip
        clean = self._loader(clean_set, clean_sampler, clean_bs, drop_last=True, train=True)
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

    @property
    def train_list_size(self) -> int:
        """Rows of the source's training list (the first rows of `train_set`; Clothing1M / folder_csv: noisy list)."""
        parts = self.source.predefined_parts()
        return len(parts["noisy"]) if parts is not None else len(self.source.train())

    def report_dataloader(self, batch_size: int, part: Literal["train", "test"] = "train") -> DataLoader:
        """Every used training sample (or the test set) in index order, eval transforms, one process."""
        if part == "test":
            images, labels, ids = self.test_set, self.test_set.labels, np.arange(len(self.test_set))
        else:
            images, labels = self.train_set, self.given_labels
            ids = np.sort(np.concatenate([self.noisy_index, self.clean_index, self.val_index]))
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
        ids = {
            "noisy": self.noisy_index,
            "clean": self.clean_index,
            "val": self.val_index,
            "train": np.sort(np.concatenate([self.noisy_index, self.clean_index, self.val_index])),
        }
        if hp.predict_on not in ids:
            raise ConfigError(f"data.predict_on = {hp.predict_on!r}: allowed are test, {', '.join(ids)}")
        return self._eval_loader(self.train_set, self.given_labels, ids[hp.predict_on])
