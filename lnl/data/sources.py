"""Data sources: where images and their given labels come from.

A source is created by name (``create_source("cifar10", root)``) and hands out :class:`ImageSet` parts;
splitting, long tail and noise happen later (``splits.py``, ``longtail.py``, ``noise.py``). Bad input raises
ConfigError. CIFAR and Digits live here, Clothing1M in ``file_sources.py``, folder+CSV in ``folder_source.py``;
the shared base and the registry in ``source_base.py``.
"""

from __future__ import annotations

import functools
import inspect
import os
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np

from lnl.data import file_sources, folder_source  # noqa: F401 (registers clothing1m, folder_csv)
from lnl.data.source_base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SOURCES,
    DataSource,
    ImageSet,
    register_source,
    root_dir,
)
from lnl.errors import ConfigError
from lnl.validation import known_keys, positive, registered

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DataSource", "ImageSet", "clothing_balanced_subsample",
           "create_source", "register_source"]  # fmt: skip


def create_source(name: str, root=None, download: bool = False, **kwargs) -> DataSource:
    """Build the source registered as ``name``; unknown names or options: ConfigError naming the allowed."""
    cls = registered("dataset", name, dict(sorted(SOURCES.items())))
    params = list(inspect.signature(cls.__init__).parameters)[3:]  # after self, root, download
    known_keys(f"dataset {name!r} options", kwargs, params)
    return cls(root, download, **kwargs)


# ----------------------------------------------------------------------------------------------------- CIFAR
def _files_only_reader(tv_cls):
    """torchvision's own CIFAR reader, with its pre-load md5 check replaced by an existence check.

    torchvision md5-checks every file before loading, which rejects the tiny genuine-format files the tests
    write. Users with the real files still get the real thing: ``_CIFAR._verify`` md5-checks a split that has
    the genuine sample count after loading, and a download keeps torchvision's archive md5 check.
    """

    class Reader(tv_cls):
        meta = {**tv_cls.meta, "md5": None}  # existence only here; verified in _CIFAR._verify

        def _check_integrity(self) -> bool:
            files = [f for f, _ in self.train_list + self.test_list] + [self.meta["filename"]]
            return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f in files)

    return Reader


class _CIFAR(DataSource):
    family = "cifar"
    _tv_name: ClassVar[str]
    _genuine_sizes: ClassVar[dict[bool, int]] = {True: 50_000, False: 10_000}

    def __init__(self, root, download: bool = False) -> None:
        import torchvision.datasets as tvd

        self._tv = tv = getattr(tvd, self._tv_name)
        self._reader, self._cache, self.download = _files_only_reader(tv), {}, download
        if download and root is not None:
            self.root = Path(root).expanduser()
            self.root.mkdir(parents=True, exist_ok=True)
            self._split(True)  # downloads (torchvision) unless the files are there
            return
        self.root = root_dir(root, self.name, f"{tv.base_folder}/ inside it (or download: true)")
        names = [f for f, _ in tv.train_list + tv.test_list] + [tv.meta["filename"]]
        missing = [n for n in names if not (self.root / tv.base_folder / n).is_file()]
        if missing:
            raise ConfigError(
                f"data root = {self.root}: {tv.base_folder}/{missing[0]} not found ({len(missing)} of "
                f"{len(names)} {self.name} files missing); set download: true"
            )

    def _split(self, train: bool):
        if train not in self._cache:
            ds = self._reader(str(self.root), train=train, download=self.download)
            self._verify(len(ds.data), train)
            self._cache[train] = (np.ascontiguousarray(ds.data), np.asarray(ds.targets, np.int64), ds.classes)
        return self._cache[train]

    def _verify(self, n: int, train: bool) -> None:
        from torchvision.datasets.utils import check_integrity

        if n != self._genuine_sizes[train]:
            return  # not the genuine files (e.g. tiny test files in the same format): nothing to compare with
        tv = self._tv
        for f, md5 in (tv.train_list if train else tv.test_list) + [[tv.meta["filename"], tv.meta["md5"]]]:
            if not check_integrity(str(self.root / tv.base_folder / f), md5):
                raise ConfigError(
                    f"data root = {self.root}: {tv.base_folder}/{f} fails its md5 checksum (corrupted "
                    "download?); delete the folder and set download: true"
                )

    @property
    def class_names(self) -> list[str]:
        return list(self._split(True)[2])

    def train(self) -> ImageSet:
        """Training images with their clean labels (true labels known)."""
        images, y, _ = self._split(True)
        return ImageSet(y, y.copy(), images=images)

    def test(self) -> ImageSet:
        images, y, _ = self._split(False)
        return ImageSet(y, y.copy(), images=images)


@register_source("cifar10")
class CIFAR10Source(_CIFAR):
    """CIFAR-10 through torchvision (``download`` for users; genuine files are md5-verified)."""

    _tv_name, num_classes = "CIFAR10", 10
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

    def asymmetric_map(self) -> np.ndarray:
        from lnl.data.noise import cifar10_asymmetric_map

        return cifar10_asymmetric_map()


@register_source("cifar100")
class CIFAR100Source(_CIFAR):
    """CIFAR-100 through torchvision; super-classes from the pickle's ``coarse_labels``."""

    _tv_name, num_classes = "CIFAR100", 100
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

    def coarse_labels(self) -> np.ndarray:
        """Fine -> coarse map [100] read from the train pickle (each fine class must have one super-class)."""
        path = self.root / self._tv.base_folder / "train"
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="latin1")  # the same file, read the same way, as torchvision
        fine, coarse = np.asarray(entry["fine_labels"]), np.asarray(entry["coarse_labels"])
        out = np.full(100, -1, dtype=np.int64)
        out[fine] = coarse
        if (out < 0).any() or np.any(out[fine] != coarse):
            raise ConfigError(
                f"data root = {self.root}: {path.name} has fine classes without exactly one coarse label; "
                "cannot build the CIFAR-100 super-class map"
            )
        return out

    def asymmetric_map(self) -> np.ndarray:
        from lnl.data.noise import superclass_next_map

        return superclass_next_map(self.coarse_labels())


# ---------------------------------------------------------------------------------------------------- Digits
@functools.cache
def _digits_parts() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    tr, te = train_test_split(np.arange(len(images)), test_size=360, stratify=d.target, random_state=0)
    y, parts = d.target.astype(np.int64), {}
    for k, i in (("train", np.sort(tr)), ("test", np.sort(te))):
        parts[k] = (images[i], y[i])
        for a in parts[k]:
            a.setflags(write=False)  # cached and shared by every DigitsSource
    return parts


@register_source("digits")
class DigitsSource(DataSource):
    """scikit-learn's bundled 8x8 digits (no download): pixels 0..16 -> uint8 0..255, 1 channel, a fixed
    stratified train/test split of 1,437/360 (``random_state=0``); ``root`` is ignored."""

    family, num_classes, in_chans, image_size = "digits", 10, 1, 8
    mean, std = (0.3053,), (0.3759,)  # of all 1,797 images, scaled to [0, 1]

    def __init__(self, root=None, download: bool = False) -> None:
        self._parts = _digits_parts()

    def train(self) -> ImageSet:
        x, y = self._parts["train"]
        return ImageSet(y, y.copy(), images=x)

    def test(self) -> ImageSet:
        x, y = self._parts["test"]
        return ImageSet(y, y.copy(), images=x)


def clothing_balanced_subsample(labels, samples_per_epoch: int, seed: int, epoch: int) -> np.ndarray:
    """Class-balanced per-epoch subsample, as DivideMix's on Clothing1M (Li et al. 2020, arXiv:2002.07394).

    ``samples_per_epoch // C`` indices per class (the remainder to random classes), without replacement and
    capped at the class size; sorted. Depends only on (labels, seed, epoch), so every rank draws the same
    indices.
    """
    labels = np.asarray(labels)
    positive("samples_per_epoch", samples_per_epoch, "a positive integer")
    classes = np.unique(labels[labels >= 0])
    rng = np.random.default_rng([seed, epoch])
    quota = np.full(len(classes), samples_per_epoch // len(classes))
    quota[rng.permutation(len(classes))[: samples_per_epoch % len(classes)]] += 1
    picks = []
    for c, q in zip(classes, quota):
        members = np.flatnonzero(labels == c)
        picks.append(rng.choice(members, size=min(int(q), len(members)), replace=False))
    return np.sort(np.concatenate(picks)).astype(np.int64)
