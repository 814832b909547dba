"""Stratified clean / val / noisy splits."""

from __future__ import annotations

import numpy as np
import pytest

from lnl.data.longtail import longtail_counts, longtail_subsample
from lnl.data.splits import Split, make_split
from lnl.errors import ConfigError


def _unbalanced_labels(seed: int = 0) -> np.ndarray:
    sizes = [60, 45, 80, 31, 50, 47, 99, 40, 33, 70]
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(10), sizes))


def _check_partition(split: Split, pool: np.ndarray) -> None:
    parts = (split.noisy, split.clean, split.val)
    for p in parts:
        assert p.dtype.kind == "i" and np.all(np.diff(p) > 0)  # sorted, no duplicates
    assert not np.intersect1d(split.noisy, split.clean).size
    assert not np.intersect1d(split.noisy, split.val).size
    assert not np.intersect1d(split.clean, split.val).size
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.sort(pool))


def test_disjoint_stratified_per_class_counts():
    labels = _unbalanced_labels()
    split = make_split(labels, clean_per_class=10, val_per_class=5, seed=0)
    _check_partition(split, np.arange(labels.size))
    sizes = np.bincount(labels, minlength=10)
    assert np.bincount(labels[split.clean], minlength=10).tolist() == [10] * 10
    assert np.bincount(labels[split.val], minlength=10).tolist() == [5] * 10
    np.testing.assert_array_equal(np.bincount(labels[split.noisy], minlength=10), sizes - 15)


def test_no_clean_set():
    labels = _unbalanced_labels()
    split = make_split(labels, clean_per_class=0, val_per_class=3, seed=1)
    assert split.clean.size == 0
    assert np.bincount(labels[split.val], minlength=10).tolist() == [3] * 10
    _check_partition(split, np.arange(labels.size))


def test_seeded_and_pure():
    labels = _unbalanced_labels()
    before = labels.copy()
    a = make_split(labels, clean_per_class=4, val_per_class=4, seed=7)
    b = make_split(labels, clean_per_class=4, val_per_class=4, seed=7)
    c = make_split(labels, clean_per_class=4, val_per_class=4, seed=8)
    for x, y in zip((a.noisy, a.clean, a.val), (b.noisy, b.clean, b.val), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.clean, c.clean) and not np.array_equal(a.val, c.val)
    np.testing.assert_array_equal(labels, before)


def test_random_within_class_not_first_indices():
    labels = np.repeat(np.arange(4), 100)  # sorted labels: the first indices of each class are 0, 100, ...
    split = make_split(labels, clean_per_class=10, val_per_class=0, seed=0)
    firsts = np.concatenate([np.arange(c * 100, c * 100 + 10) for c in range(4)])
    assert not np.array_equal(split.clean, firsts)


def test_too_many_per_class_is_config_error():
    labels = _unbalanced_labels()  # smallest class (3) has 31 samples
    make_split(labels, clean_per_class=21, val_per_class=10, seed=0)
    with pytest.raises(ConfigError, match=r"clean_per_class \+ data.val_per_class = 32: class 3 has only 31"):
        make_split(labels, clean_per_class=22, val_per_class=10, seed=0)


@pytest.mark.parametrize(
    "kw", [{"clean_per_class": -1, "val_per_class": 0}, {"clean_per_class": 1, "val_per_class": 2.5}]
)
def test_bad_counts_are_config_errors(kw):
    with pytest.raises(ConfigError, match="per_class = "):
        make_split(_unbalanced_labels(), seed=0, **kw)


def test_subset_from_longtail_is_respected():
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 500))
    subset = longtail_subsample(labels, 100, seed=0)
    split = make_split(labels, clean_per_class=2, val_per_class=3, seed=0, subset=subset)
    _check_partition(split, subset)
    counts = np.array(longtail_counts(500, 10, 100))
    np.testing.assert_array_equal(np.bincount(labels[split.noisy], minlength=10), counts - 5)
    assert np.bincount(labels[split.clean], minlength=10).tolist() == [2] * 10
    with pytest.raises(ConfigError, match="class 9 has only 5"):
        make_split(labels, clean_per_class=3, val_per_class=3, seed=0, subset=subset)


def test_subset_out_of_range_and_bad_labels():
    labels = _unbalanced_labels()
    with pytest.raises(ConfigError, match="subset"):
        make_split(labels, clean_per_class=1, val_per_class=1, seed=0, subset=[0, labels.size])
    with pytest.raises(ConfigError, match="labels"):
        make_split(np.array([0, 1, -1]), clean_per_class=0, val_per_class=0, seed=0)
