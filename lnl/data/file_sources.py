"""File-backed sources: Clothing1M (key lists + kv files), and the CSV readers a user's folder shares.

Registered on import (`lnl.data.sources` imports this module): ``create_source("clothing1m", root)``.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import numpy as np

from lnl.data.source_base import IMAGENET_MEAN, IMAGENET_STD, DataSource, ImageSet, register_source, root_dir
from lnl.errors import ConfigError

CLOTHING1M_CLASSES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket",
                      "Down Coat", "Suit", "Shawl", "Dress", "Vest", "Underwear")  # fmt: skip
CLOTHING1M_SIZES = dict(noisy_train=1_000_000, clean_train=47_570, clean_val=14_313, clean_test=10_526)


def check_exist(root: Path, rels: list[str], what: str) -> None:
    """Count listed images that are missing (one directory walk, not one stat per file) and fail early."""
    found: set[str] = set()
    tops = {r.split("/", 1)[0] for r in rels if "/" in r}
    for top in tops & {p.name for p in root.iterdir() if p.is_dir()}:
        for d, _, files in os.walk(root / top, followlinks=True):
            rel = Path(d).relative_to(root).as_posix()
            found.update(f"{rel}/{f}" for f in files)
    missing = [r for r in rels if r not in found and not (root / r).is_file()]
    if missing:
        n = f"{len(missing)} of {len(rels)}"
        raise ConfigError(f"{what}: {n} listed images are missing under {root} (first: {missing[0]})")


def check_range(labels: np.ndarray, num_classes: int, what: str, lines: np.ndarray | None = None) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        where = f" line {lines[bad[0]]}" if lines is not None else ""
        raise ConfigError(
            f"{what}{where}: label {labels[bad[0]]} out of range; allowed are 0..{num_classes - 1}"
        )


def is_int(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


def read_rows(
    path: Path, sep: str | None, root: Path | None = None
) -> tuple[list[str], list[str], np.ndarray]:
    """``path label`` rows -> (keys, labels as written, line numbers). Clothing1M kv files are space separated;
    CSVs comma separated with an optional header: a first row whose label is not an integer while the others
    are, or (class-name labels) whose path names no file under ``root``."""
    with path.open(newline="") as f:
        reader = csv.reader(f) if sep == "," else (ln.split() for ln in f)
        rows = [(i + 1, r) for i, r in enumerate(reader) if r]
    if rows and sep == "," and len(rows[0][1]) == 2 and not is_int(rows[0][1][1]):
        rest_ids = all(len(r) == 2 and is_int(r[1]) for _, r in rows[1:])
        if rest_ids or root is None or not (root / rows[0][1][0].strip()).is_file():
            rows = rows[1:]  # header
    keys, labels = [], []
    for line, r in rows:
        if len(r) != 2 or not r[1].strip():
            raise ConfigError(f"{path} line {line}: {r} is not 'path{sep or ' '}label'")
        keys.append(r[0].strip())
        labels.append(r[1].strip())
    return keys, labels, np.asarray([line for line, _ in rows], dtype=np.int64)


def _read_pairs(path: Path, sep: str | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``path label`` rows with integer labels -> (keys, labels, line numbers)."""
    keys, labels, lines = read_rows(path, sep)
    bad = next((i for i, v in enumerate(labels) if not is_int(v)), None)
    if bad is not None:
        raise ConfigError(f"{path} line {lines[bad]}: label {labels[bad]!r} is not an integer class id")
    return keys, np.asarray([int(v) for v in labels], dtype=np.int64), lines


@register_source("clothing1m")
class Clothing1MSource(DataSource):
    """Clothing1M (Xiao et al. 2015, "Learning from massive noisy labeled data for image classification").

    Parts: noisy = noisy_train with its noisy labels (true label = the image's clean label where it has one,
    else -1), clean = clean_train, val = clean_val, test = clean_test. The six lists sit in ``root`` or
    ``root/annotations``; keys are paths relative to ``root`` (``images/...``). List sizes differing from the
    release raise ConfigError (a warning with ``strict_sizes=False``); keys without a label or image fail
    early, with their count.
    """

    family, num_classes, image_size = "clothing", 14, 224
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(
        self, root, download: bool = False, strict_sizes: bool = True, image_size: int = 224
    ) -> None:
        self.image_size = image_size  # crop size of the transforms (Resize(size*256/224) first)
        if download:
            raise ConfigError(
                "download = true: Clothing1M cannot be downloaded automatically; request it from its authors "
                "and set the data root to the folder holding images/ and the lists"
            )
        root = self.root = root_dir(root, "clothing1m", "images/ and the key/kv lists")
        files = [f"{k}_key_list.txt" for k in CLOTHING1M_SIZES] + ["noisy_label_kv.txt", "clean_label_kv.txt"]
        ann = root if (root / files[-1]).is_file() else root / "annotations"
        missing = [f for f in files if not (ann / f).is_file()]
        if missing:
            raise ConfigError(f"data root = {root}: {missing[0]} not found there nor in annotations/ "
                              f"(clothing1m needs {', '.join(files)})")  # fmt: skip
        keys = {k: (ann / f"{k}_key_list.txt").read_text().split() for k in CLOTHING1M_SIZES}
        sizes = {k: (len(v), CLOTHING1M_SIZES[k]) for k, v in keys.items()}
        wrong = [f"{k} {n:,} (expected {want:,})" for k, (n, want) in sizes.items() if n != want]
        if wrong:
            msg = f"clothing1m list sizes differ from the release: {'; '.join(wrong)}"
            if strict_sizes:
                raise ConfigError(f"{msg}; set strict_sizes: false to use these lists anyway")
            warnings.warn(msg, stacklevel=2)
        kv = {n: dict(zip(*_read_pairs(ann / f"{n}_label_kv.txt", None)[:2])) for n in ("noisy", "clean")}
        self._parts = {}
        for k, ks in keys.items():
            noisy = k == "noisy_train"
            table = "noisy" if noisy else "clean"  # the kv file of this list's labels
            unlabeled = [key for key in ks if key not in kv[table]]
            if unlabeled:
                raise ConfigError(f"clothing1m {k}_key_list.txt: {len(unlabeled)} keys have no label in "
                                  f"{table}_label_kv.txt (first: {unlabeled[0]})")  # fmt: skip
            y = np.asarray([kv[table][key] for key in ks], dtype=np.int64)
            check_range(y, 14, f"clothing1m {k}_key_list.txt")
            true = np.asarray([kv["clean"].get(key, -1) for key in ks], dtype=np.int64) if noisy else y
            self._parts[k] = ImageSet(y, true, paths=[str(root / key) for key in ks])
        check_exist(root, [key for ks in keys.values() for key in ks], "clothing1m")

    @property
    def class_names(self) -> list[str]:
        return list(CLOTHING1M_CLASSES)

    def train(self) -> ImageSet:
        return self._parts["noisy_train"]

    def test(self) -> ImageSet:
        return self._parts["clean_test"]

    def predefined_parts(self) -> dict[str, ImageSet]:
        p = self._parts
        return {"noisy": p["noisy_train"], "clean": p["clean_train"], "val": p["clean_val"]}
