"""Building a run's labels: source -> long tail -> stratified clean / val / noisy split -> seeded noise.

`build_labels` returns one `LabelledParts` record (the index sets, the labels to train on, the true labels,
the realized noise rate and the SHA-256 of `labels.csv`); `DataRecord` is what a run's `results.json` says
about its data. Pure functions of the source, the settings and the seeds: the same seeds give the same labels.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from lnl.data.longtail import longtail_subsample
from lnl.data.noise import NoiseSpec, apply_noise, read_label_file, realized_rate
from lnl.data.source_base import DataSource, ImageSet
from lnl.data.splits import make_split
from lnl.errors import ConfigError
from lnl.report.class_names import write_classes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelSettings:
    """The data settings that decide the labels (`NoisyLabelDataModule`'s arguments of the same names)."""

    dataset: str
    clean_per_class: int = 0
    val_per_class: int = 0
    val_labels: str = "clean"
    longtail_ratio: float | None = None
    split_seed: int = 0
    noise_seed: int = 0


@dataclass(frozen=True)
class LabelledParts:
    """The labelled training set of a run: disjoint index sets into `train_set` and the labels per index.

    `given_labels` [N] are the labels trained on (noisy for the noisy set, and for val with `val_labels:
    noisy`); `true_labels` [N] the clean ones (-1 unknown); `realized_rate` the noisy set's wrong fraction;
    `labels_sha256` the SHA-256 of `labels_csv(self)` (checked on resume).
    """

    train_set: ImageSet
    test_set: ImageSet
    noisy_index: np.ndarray
    clean_index: np.ndarray
    val_index: np.ndarray
    given_labels: np.ndarray
    true_labels: np.ndarray
    realized_rate: float
    labels_sha256: str

    @property
    def used_index(self) -> np.ndarray:
        """Every used training sample (noisy, clean and val), in index order."""
        return np.sort(np.concatenate([self.noisy_index, self.clean_index, self.val_index]))


@dataclass(frozen=True)
class DataRecord:
    """What a run's `results.json` records about its data (`cli.after_fit`)."""

    realized_rate: float
    dataset: str
    noise: dict[str, Any]  # the `data.noise` settings and their run-name tag
    noise_seed: int
    split_seed: int
    labels_sha256: str
    clean_budget: int  # clean labels the method may use: the clean set, plus val with `val_labels: clean`


# (train_set, noisy index, clean index, val index, given labels)
_Built = tuple[ImageSet, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _concat(sets: list[ImageSet]) -> ImageSet:
    """One ImageSet holding `sets` one after another (all in memory, or all file-backed)."""
    labels = np.concatenate([s.labels for s in sets])
    true_labels = np.concatenate([s.true_labels for s in sets])
    if all(s.paths is not None for s in sets):
        return ImageSet(labels, true_labels, paths=[p for s in sets for p in s.paths])
    return ImageSet(labels, true_labels, images=np.concatenate([s.images for s in sets]))


def _corrupt(source: DataSource, train: ImageSet, spec: NoiseSpec, dataset: str, parts: list[np.ndarray],
             seed: int) -> list[np.ndarray]:  # fmt: skip
    """Noisy labels for each index array of `parts` (training part first), drawn by one noise process."""
    kind, labels, ids = spec.noise_kind, train.labels, np.concatenate(parts)
    class_map = source.asymmetric_map() if kind.needs_class_map else None
    if kind.needs_class_map and class_map is None:
        raise ConfigError(
            f"noise.kind = {spec.kind!r} for dataset {dataset!r}: no semantic class map is defined "
            "for it (cifar10, cifar100 have one); use symmetric, pairflip or random_flip"
        )
    features = train.raw_features(ids) if kind.per_sample else None
    file_labels = None
    if kind.from_file:
        full = read_label_file(
            spec.file, key=spec.file_key, num_classes=source.num_classes,
            expected_len=len(labels), clean_labels=labels,
        )  # fmt: skip
        file_labels = full[ids]
    noisy = apply_noise(
        spec, labels[ids], source.num_classes, seed=seed, class_map=class_map,
        features=features, file_labels=file_labels, parts=[len(p) for p in parts],
    )  # fmt: skip
    return np.split(noisy, np.cumsum([len(p) for p in parts])[:-1])


def _split_and_corrupt(source: DataSource, spec: NoiseSpec, s: LabelSettings) -> _Built:
    """(train_set, noisy, clean, val index, given labels) of a source the data module splits itself."""
    train = source.train()
    labels = train.labels
    subset = longtail_subsample(labels, s.longtail_ratio, s.split_seed) if s.longtail_ratio else None
    split = make_split(labels, clean_per_class=s.clean_per_class, val_per_class=s.val_per_class,
                       seed=s.split_seed, subset=subset)  # fmt: skip
    given = labels.copy()
    # Noisy val labels come from the SAME noise process as the training labels (one call: same transition
    # matrix / random-flip map / IDN projection and flip-rate law); only the per-sample draws are val's own.
    # The noisy set's labels are those of corrupting it alone, so they do not depend on `val_labels`.
    parts = [split.noisy] + ([split.val] if s.val_labels == "noisy" else [])
    for ids, noisy in zip(parts, _corrupt(source, train, spec, s.dataset, parts, s.noise_seed)):
        given[ids] = noisy
    return train, split.noisy, split.clean, split.val, given


def _predefined(parts: dict[str, ImageSet], spec: NoiseSpec, s: LabelSettings, num_classes: int) -> _Built:
    """(train_set, noisy, clean, val index, given labels) of a source whose parts are fixed (Clothing1M)."""
    if spec.noise_kind.adds_noise:
        raise ConfigError(
            f"data.noise.kind = {spec.kind!r} for {s.dataset}: its labels are already noisy; use kind: none"
        )
    # Concatenate noisy, clean and val parts into one indexable train set. With `val_labels: noisy` the
    # dataset's clean val list is not used; a noisy hold-out from the noisy part replaces it.
    noisy, clean, val = parts["noisy"], parts["clean"], parts["val"]
    offsets = np.cumsum([0, len(noisy), len(clean)])
    train = _concat([noisy, clean, val])
    noisy_index, clean_index = np.arange(len(noisy)), offsets[1] + np.arange(len(clean))
    val_index = offsets[2] + np.arange(len(val))
    if s.val_labels == "noisy":  # no clean data at all: hold out a noisy val set, stratified by ỹ
        if s.val_per_class < 1:
            raise ConfigError(
                f"data.val_per_class = {s.val_per_class} with val_labels: noisy on {s.dataset}: give a "
                "positive count to hold out a noisy validation set"
            )
        held = make_split(noisy.labels, clean_per_class=0, val_per_class=s.val_per_class, seed=s.split_seed,
                          num_classes=num_classes)  # fmt: skip
        noisy_index, val_index = held.noisy, held.val
    return train, noisy_index, clean_index, val_index, train.labels


def build_labels(source: DataSource, spec: NoiseSpec, settings: LabelSettings) -> LabelledParts:
    """Split the source's training set and draw its noisy labels (docs/design.md, "Data")."""
    parts = source.predefined_parts()
    if parts is not None:
        train, noisy, clean, val, given = _predefined(parts, spec, settings, source.num_classes)
    else:
        train, noisy, clean, val, given = _split_and_corrupt(source, spec, settings)
    for name, a, b in (("noisy/clean", noisy, clean), ("noisy/val", noisy, val), ("clean/val", clean, val)):
        assert not np.intersect1d(a, b).size, f"{name} parts overlap"
    true = train.true_labels
    rate = realized_rate(true[noisy], given[noisy])
    sha = hashlib.sha256(_labels_csv(noisy, clean, val, true, given).encode()).hexdigest()
    log.info("noisy labels: realized rate %.4f, sha256 %s", rate, sha)
    return LabelledParts(train, source.test(), noisy, clean, val, given, true, rate, sha)


def _labels_csv(
    noisy: np.ndarray, clean: np.ndarray, val: np.ndarray, true: np.ndarray, given: np.ndarray
) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", "split", "true_label", "noisy_label"])
    rows = [(i, part) for part, ids in (("noisy", noisy), ("clean", clean), ("val", val)) for i in ids]
    for i, part in sorted(rows):
        writer.writerow([i, part, int(true[i]), int(given[i])])
    return out.getvalue()


def labels_csv(parts: LabelledParts) -> str:
    """`index,split,true_label,noisy_label` for every used training sample (the run's `labels.csv`)."""
    return _labels_csv(parts.noisy_index, parts.clean_index, parts.val_index, parts.true_labels,
                       parts.given_labels)  # fmt: skip


def write_labels(parts: LabelledParts, class_names: list[str], directory: str | None) -> None:
    """Write labels.csv and classes.csv (class id -> name) into the run directory."""
    if directory:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "labels.csv"), "w") as f:
            f.write(labels_csv(parts))
        write_classes(class_names, directory)
