"""`NoisyLabelDataModule`: seeded split and noise, paired noisy + clean streams (docs/design.md, "Data")."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule

from lnl.data.batch import DataRequirements
from lnl.data.device_views import DEVICE_FAMILIES
from lnl.data.folder_source import FolderFiles
from lnl.data.labels import DataRecord, LabelledParts, LabelSettings, build_labels, labels_csv, write_labels
from lnl.data.loaders import Loaders
from lnl.data.new_images import list_new_images
from lnl.data.noise import NoiseSpec
from lnl.data.sizing import Sizing, fit_to_data
from lnl.data.sources import create_source
from lnl.errors import ConfigError
from lnl.validation import one_of

__all__ = ["DataRequirements", "NoisyLabelDataModule"]

log = logging.getLogger(__name__)


class _LabelField:
    """A field of the data module's `LabelledParts` record, by its name (assigning replaces the record)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, module: Any, owner: type | None = None) -> Any:
        return self if module is None else getattr(module.labels, self.name)

    def __set__(self, module: Any, value: Any) -> None:
        module.labels = dataclasses.replace(module.labels, **{self.name: value})


class NoisyLabelDataModule(Loaders, LightningDataModule):
    """Source -> long tail -> stratified clean / val / noisy split -> seeded noise -> loaders.

    The labels are built once, at construction (`lnl.data.labels`: one `LabelledParts` record, `self.labels`);
    the loaders are `lnl.data.loaders.Loaders`. See docs/design.md, "Data".

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
        one_of("data.crop_padding", crop_padding, ("constant", "reflect"))
        self.noise = noise or NoiseSpec()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ConfigError(f"data.{name} = {value}: must be a positive integer")
        one_of("data.augment_on", augment_on, ("auto", "device", "loader"))
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
        if dataset == "folder_csv" and self.noise.noise_kind.adds_noise:
            log.warning(
                "lnl: data.noise.kind = %s adds synthetic noise on top of your labels; set data.noise.kind: none "
                "to learn from them as given", self.noise.kind,
            )  # fmt: skip
        self.noise.validate(self.source.num_classes)
        self.requirements = DataRequirements()
        self.resume_position: tuple[int, int] | None = None  # (epoch, batches done) of a mid-epoch checkpoint
        self.predict_paths = list_new_images(predict_images) if predict_images else None  # bad paths fail now
        self.sizing = self._fit_to_data() if scale_to_data else None
        # split and noise now, so that bad settings fail before any training machinery starts
        self.labels: LabelledParts = build_labels(self.source, self.noise, self.label_settings())
        if augment_on == "device" and not self.device_capable:
            raise ConfigError(
                f"data.augment_on = 'device' for dataset {dataset!r}: only in-memory images of the "
                f"{' / '.join(DEVICE_FAMILIES)} families with crop_padding 'constant' can be augmented on the "
                "device; use loader or auto"
            )
        self.device_views = None  # set by train_dataloader when the views are drawn on the device

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

    # ------------------------------------------------------------------ persistence
    def labels_csv(self) -> str:
        """`index,split,true_label,noisy_label` for every used training sample (the run's `labels.csv`)."""
        return labels_csv(self.labels)

    def write_labels(self, directory: str | None) -> None:
        """Write labels.csv and classes.csv (class id -> name) into the run directory (rank zero)."""
        write_labels(self.labels, self.source.class_names, directory)

    def label_settings(self) -> LabelSettings:
        """The settings that decide the labels, as `build_labels` takes them."""
        hp = self.hparams
        return LabelSettings(hp.dataset, hp.clean_per_class, hp.val_per_class, hp.val_labels, hp.longtail_ratio,
                             hp.split_seed, hp.noise_seed)  # fmt: skip

    def record(self) -> DataRecord:
        """What the run's `results.json` says about its data."""
        hp, parts = self.hparams, self.labels
        budget = len(parts.clean_index) + (len(parts.val_index) if hp.val_labels == "clean" else 0)
        return DataRecord(parts.realized_rate, hp.dataset, vars(self.noise) | {"tag": self.noise.tag},
                          hp.noise_seed, hp.split_seed, parts.labels_sha256, int(budget))  # fmt: skip

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

    # ------------------------------------------------------------------ the built labels, by name
    # the built labels' fields by name (`LabelledParts`)
    train_set, test_set = _LabelField(), _LabelField()
    noisy_index, clean_index, val_index = _LabelField(), _LabelField(), _LabelField()
    given_labels, true_labels = _LabelField(), _LabelField()
    realized_rate, labels_sha256 = _LabelField(), _LabelField()

    @property
    def train_size(self) -> int:
        """Rows of `train_set` (per-sample buffers of a method are sized from it)."""
        return len(self.labels.train_set)

    @property
    def train_list_size(self) -> int:
        """Rows of the source's training list (the first rows of `train_set`; Clothing1M / folder_csv: noisy list)."""
        parts = self.source.predefined_parts()
        return len(parts["noisy"]) if parts is not None else len(self.source.train())
