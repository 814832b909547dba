"""Long-tail counts and subsampling (Cui et al. 2019)."""

from __future__ import annotations

import numpy as np
import pytest

from lnl.data.longtail import longtail_counts, longtail_subsample
from lnl.errors import ConfigError


def test_cifar10_rho100_table():
    assert longtail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.mark.parametrize("n_max,C,rho", [(500, 100, 100), (5000, 10, 10), (500, 100, 50), (180, 10, 7.5)])
def test_counts_follow_formula(n_max, C, rho):
    counts = longtail_counts(n_max, C, rho)
    assert counts == [int(n_max * (1 / rho) ** (i / (C - 1))) for i in range(C)]
    assert counts[0] == n_max
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))


def test_balanced_when_rho_is_one():
    assert longtail_counts(123, 7, 1) == [123] * 7


@pytest.mark.parametrize("rho", [0.5, 0, -3, float("nan")])
def test_bad_ratio_is_config_error(rho):
    with pytest.raises(ConfigError, match=f"imbalance_ratio = {rho}"):
        longtail_counts(5000, 10, rho)


def _balanced(C: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(C), n))


def test_subsample_cifar10_scale_matches_table():
    labels = _balanced(10, 5000)
    idx = longtail_subsample(labels, 100, seed=3)
    assert np.bincount(labels[idx], minlength=10).tolist() == longtail_counts(5000, 10, 100)
    assert np.all(np.diff(idx) > 0)  # sorted, unique


def test_subsample_is_seeded_and_pure():
    labels = _balanced(10, 300)
    before = labels.copy()
    a, b = longtail_subsample(labels, 10, seed=1), longtail_subsample(labels, 10, seed=1)
    c = longtail_subsample(labels, 10, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(labels, before)
    assert np.bincount(labels[c], minlength=10).tolist() == longtail_counts(300, 10, 10)


def test_subsample_uses_smallest_class_as_head_size():
    labels = np.concatenate([np.repeat(np.arange(10), 180), np.zeros(7, dtype=np.int64), [3, 3]])
    idx = longtail_subsample(labels, 10, seed=0)
    assert np.bincount(labels[idx], minlength=10).tolist() == longtail_counts(180, 10, 10)


def test_subsample_errors():
    with pytest.raises(ConfigError, match="class 2 has no sample"):
        longtail_subsample(np.array([0, 1, 3, 0, 1, 3]), 10, seed=0)
    with pytest.raises(ConfigError, match="labels"):
        longtail_subsample(np.array([0, -1, 1]), 10, seed=0)
    with pytest.raises(ConfigError, match="out of range"):
        longtail_subsample(np.array([0, 1, 5]), 10, seed=0, num_classes=3)
