"""Stratified clean / val / noisy split of a source's training part (docs/design.md, "Data")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lnl.errors import ConfigError


@dataclass
class Split:
    """Disjoint, sorted index arrays into the source's training part."""

    noisy: np.ndarray
    clean: np.ndarray
    val: np.ndarray


def make_split(
    labels,
    *,
    clean_per_class: int,
    val_per_class: int,
    seed: int,
    subset=None,
    num_classes: int | None = None,
) -> Split:
    """Stratified split (a class-balanced clean set, as in EMLC §4.1): per class, ``clean_per_class`` clean
    then ``val_per_class`` val samples drawn with ``seed`` from ``subset`` (e.g. long-tail indices; default
    all); the rest is the noisy set.

    ``labels`` are the clean labels of the whole training part; a class with fewer than
    clean_per_class + val_per_class samples raises ConfigError.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise ConfigError(
            f"labels: expected a 1-D array of known class indices >= 0, got {y.shape} {y.dtype}"
        )
    for name, v in (("data.clean_per_class", clean_per_class), ("data.val_per_class", val_per_class)):
        if int(v) != v or v < 0:
            raise ConfigError(f"{name} = {v}: must be an integer >= 0")
    pool = np.arange(y.size) if subset is None else np.unique(np.asarray(subset, dtype=np.int64))
    if pool.size and (pool[0] < 0 or pool[-1] >= y.size):
        raise ConfigError(f"subset: indices must lie in 0..{y.size - 1}")
    C = (int(y.max()) + 1 if y.size else 0) if num_classes is None else num_classes
    if y.size and y.max() >= C:
        raise ConfigError(f"labels: label {int(y.max())} out of range for num_classes = {C}")
    need = clean_per_class + val_per_class
    rng = np.random.default_rng(seed)
    noisy, clean, val = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for c in range(C):
        idx = rng.permutation(pool[y[pool] == c])
        if idx.size < need:
            raise ConfigError(
                f"data.clean_per_class + data.val_per_class = {need}: class {c} has only {idx.size} "
                "training samples; use at most that many"
            )
        clean.append(idx[:clean_per_class])
        val.append(idx[clean_per_class:need])
        noisy.append(idx[need:])
    split = Split(*(np.sort(np.concatenate(p)) for p in (noisy, clean, val)))
    every = np.concatenate([split.noisy, split.clean, split.val])
    assert np.array_equal(np.sort(every), pool), "split parts must be disjoint and cover the pool"
    return split
