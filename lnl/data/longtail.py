"""Long-tailed subsampling of a training part: the exponential profile of long-tailed CIFAR.

Cui et al., "Class-balanced loss based on effective number of samples", CVPR 2019, arXiv:1901.05555; used by
the DML paper's long-tailed setting (§5.3, Table 7).
"""

from __future__ import annotations

import numpy as np

from lnl.errors import ConfigError
from lnl.validation import at_least


def longtail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Per-class sizes int(n_max · (1/ρ)^(i/(C−1))) in float64 then truncation (Cui et al. 2019).

    CIFAR-10 with n_max = 5000 and ρ = 100 gives 5000 2997 1796 1077 645 387 232 139 83 50.
    """
    at_least("data.imbalance_ratio", imbalance_ratio, 1, ">= 1 (1 = balanced)")
    if num_classes < 2:
        raise ConfigError(f"num_classes = {num_classes}: a long tail needs at least 2 classes")
    at_least("n_max", n_max, 1)
    base = np.float64(1.0) / np.float64(imbalance_ratio)
    return [int(np.float64(n_max) * base ** (np.float64(i) / (num_classes - 1))) for i in range(num_classes)]


def longtail_subsample(
    labels, imbalance_ratio: float, seed: int, *, num_classes: int | None = None
) -> np.ndarray:
    """Sorted indices of a long-tailed subset of ``labels`` (clean labels; Cui et al. 2019).

    Class i keeps ``longtail_counts(n_max, C, ρ)[i]`` samples drawn without replacement with ``seed``;
    class 0 is the head and n_max is the smallest class size (the class size for balanced sources).
    """
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ConfigError(
            f"labels: expected a non-empty 1-D array of class indices >= 0, got {y.shape} {y.dtype}"
        )
    C = int(y.max()) + 1 if num_classes is None else num_classes
    if y.max() >= C:
        raise ConfigError(f"labels: label {int(y.max())} out of range for num_classes = {C}")
    sizes = np.bincount(y, minlength=C)
    if sizes.min() == 0:
        raise ConfigError(
            f"labels: class {int(np.argmin(sizes))} has no sample; a long tail needs every class"
        )
    counts = longtail_counts(int(sizes.min()), C, imbalance_ratio)
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in enumerate(counts)]
    return np.sort(np.concatenate(keep))
