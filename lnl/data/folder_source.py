"""A user's own images: a folder and CSVs of ``path,label`` rows (`data.dataset: folder_csv`).

Registered on import (`lnl.data.sources` imports this module): ``create_source("folder_csv", root, ...)``.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lnl.data.file_sources import check_exist, check_range, is_int, read_rows
from lnl.data.source_base import IMAGENET_MEAN, IMAGENET_STD, DataSource, ImageSet, register_source, root_dir
from lnl.errors import ConfigError


@dataclass
class FolderFiles:
    """Your own images (`data.dataset: folder_csv`, `data.folder: {...}`): CSVs of `path,label` rows with paths
    relative to `data.root` and an optional header row.

    Args:
        train_csv: the labels to learn from (noisy). Without `val_csv` a validation hold-out is split off it
            (`data.val_per_class`).
        val_csv: a validation list (its labels are trusted unless `data.val_labels: noisy`).
        test_csv: a test list; without it the run reports no test accuracy.
        clean_csv: trusted labels for some images (a clean set for EMLC / MLC; needs `val_csv`). Training images
            also listed here get these labels as their true labels in the label report.
        image_size: side in pixels the images are resized / cropped to (use the images' own size for small ones).
        num_classes: number of classes (default: the largest label + 1).
    """

    train_csv: str = "train.csv"
    val_csv: str | None = None
    test_csv: str | None = None
    clean_csv: str | None = None
    image_size: int = 224
    num_classes: int | None = None

    def as_kwargs(self) -> dict:
        return asdict(self)


def _note_resize(path: str, image_size: int) -> None:
    """Say so when images are resized by a factor of two or more (e.g. 32-px images to the default 224)."""
    from PIL import Image

    with Image.open(path) as im:
        width, height = im.size
    if max(width, height) * 2 <= image_size or min(width, height) >= 2 * image_size:
        warnings.warn(
            f"folder_csv images are {width}x{height} px (first: {path}); data.folder.image_size = {image_size} "
            "resizes them; set it to about their size for small images",
            stacklevel=2,
        )


Table = tuple[list[str], Any, np.ndarray, Path]  # (paths, labels, line numbers, csv file)


def _label_names(tables: list[Table], num_classes: int | None) -> list[str] | None:
    """The sorted class names when every label of every CSV is a name (None when every label is an integer id);
    labels mixing ids and names, or a `num_classes` other than the number of names, raise ConfigError."""
    kinds = {True: None, False: None}  # is-id -> (csv, line, label) of its first label
    for _, labels, lines, path in tables:
        for label, line in zip(labels, lines):
            kind = is_int(label)
            if kinds[kind] is None:
                kinds[kind] = (path, line, label)
    if kinds[False] is None:
        return None
    if kinds[True] is not None:
        (p1, l1, v1), (p2, l2, v2) = kinds[True], kinds[False]
        raise ConfigError(
            f"{p2} line {l2}: label {v2!r} is a class name but {p1} line {l1} has the class id {v1}; "
            "write every label as a class name or every label as an integer id"
        )
    names = sorted({v for _, labels, _, _ in tables for v in labels})
    if num_classes is not None and num_classes != len(names):
        raise ConfigError(
            f"data.folder.num_classes = {num_classes}: the CSVs name {len(names)} classes "
            f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); leave num_classes unset with class names"
        )
    return names


def _check_every_id_used(tables: list[Table], top: int) -> None:
    """Integer labels define classes 0..top-1: one without any image is an error naming the largest label."""
    seen = np.zeros(top, dtype=bool)
    for _, y, _, _ in tables:
        seen[y] = True
    if seen.all():
        return
    missing = np.flatnonzero(~seen)
    _, y, lines, path = next(t for t in tables if (t[1] == top - 1).any())
    shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
    raise ConfigError(
        f"{path} line {lines[np.argmax(y == top - 1)]}: label {top - 1} makes {top} classes (0..{top - 1}), but "
        f"{len(missing)} of them have no image ({shown}); class ids must run 0..C-1 with every class present: "
        "renumber the labels, write class names instead, or set data.folder.num_classes"
    )


@register_source("folder_csv")
class FolderCSVSource(DataSource):
    """A user's images with CSVs of ``path,label`` rows (paths relative to ``root``; optional header).

    ``train_csv``: noisy labels. ``clean_csv`` / ``val_csv``: trusted sets; given a ``val_csv``,
    ``predefined_parts`` returns {"noisy", "clean" (empty without clean_csv), "val"} (a clean_csv needs a
    val_csv), otherwise the data module splits ``train()``. A training image also listed in clean_csv gets
    that label as its true label (else -1). ``num_classes`` defaults to the largest label + 1. Out-of-range
    labels and missing images raise ConfigError.
    """

    family = "generic"

    def __init__(
        self,
        root,
        download: bool = False,
        train_csv: str = "train.csv",
        clean_csv: str | None = None,
        val_csv: str | None = None,
        test_csv: str | None = None,
        num_classes: int | None = None,
        image_size: int = 224,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        if download:
            raise ConfigError("download = true: folder_csv reads local files only; set download: false")
        self.root = root = root_dir(root, "folder_csv", "the images and CSV files")
        if clean_csv and not val_csv:
            raise ConfigError(
                f"val_csv = None: a clean_csv ({clean_csv}) needs a val_csv too (given parts are "
                "noisy/clean/val, as for Clothing1M); or drop clean_csv and let the data module split"
            )
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
        self.train_csv = train_csv
        tables = {}
        for part, name in {"train": train_csv, "clean": clean_csv, "val": val_csv, "test": test_csv}.items():
            if name is None:
                continue
            path = root / name if (root / name).is_file() else Path(name)  # under root, else as given
            if not path.is_file():
                raise ConfigError(f"{part}_csv = {name}: file not found under {root} nor at {name}")
            tables[part] = (*read_rows(path, ",", root), path)
        if not len(tables["train"][1]):
            raise ConfigError(f"train_csv = {train_csv}: no 'path,label' rows in it")
        self.label_names = _label_names(list(tables.values()), num_classes)
        if self.label_names is not None:
            ids = {name: i for i, name in enumerate(self.label_names)}
            tables = {
                k: (r, np.asarray([ids[v] for v in y], dtype=np.int64), n, p)
                for k, (r, y, n, p) in tables.items()
            }
        else:
            tables = {
                k: (r, np.asarray([int(v) for v in y], dtype=np.int64), n, p)
                for k, (r, y, n, p) in tables.items()
            }
        top = max(int(t[1].max(initial=-1)) for t in tables.values()) + 1
        self.num_classes = int(num_classes) if num_classes is not None else top
        for rels, y, lines, path in tables.values():
            check_range(y, self.num_classes, f"{path} (num_classes = {self.num_classes})", lines)
            check_exist(root, rels, str(path))
        if num_classes is None and self.label_names is None:
            _check_every_id_used(list(tables.values()), top)
        _note_resize(str(root / tables["train"][0][0]), image_size)
        clean_of = dict(zip(*tables["clean"][:2])) if "clean" in tables else {}
        self._parts = {}
        for part, (rels, y, _, _) in tables.items():
            true = [clean_of.get(r, -1) for r in rels] if part == "train" else y.copy()
            self._parts[part] = ImageSet(y, true, paths=[str(root / r) for r in rels])

    @property
    def class_names(self) -> list[str]:
        """The class names of the CSVs (sorted; id = position), or "0" .. "C-1" for integer labels."""
        return list(self.label_names) if self.label_names is not None else super().class_names

    def train(self) -> ImageSet:
        return self._parts["train"]

    def test(self) -> ImageSet:
        """The test list, or an empty set without `test_csv` (the run then reports no test accuracy)."""
        return self._parts.get("test", ImageSet(np.zeros(0), np.zeros(0), paths=[]))

    def predefined_parts(self) -> dict[str, ImageSet] | None:
        if "val" not in self._parts:
            return None
        empty = ImageSet(np.zeros(0), np.zeros(0), paths=[])
        return {
            "noisy": self._parts["train"],
            "clean": self._parts.get("clean", empty),
            "val": self._parts["val"],
        }
