"""Label-noise generators and transition matrices (the kinds themselves: `lnl.data.noise_kinds`).

Class-conditional noise from a transition matrix (Patrini et al., "Making deep neural networks robust to label
noise: a loss correction approach", CVPR 2017, arXiv:1609.03683; the DML paper's §5.1), instance-dependent
noise after Xia et al. ("Part-dependent label noise", NeurIPS 2020, arXiv:2006.07836); label files are read by
`lnl.data.label_files`. Pure numpy functions: they return new arrays, never mutate their inputs, and are deterministic in ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lnl.data.label_files import CIFARN_KEYS, check_labels, read_label_file
from lnl.data.noise_kinds import NOISE_KINDS, NoiseKind, noise_kind
from lnl.errors import ConfigError
from lnl.validation import one_of

__all__ = ["CIFARN_KEYS", "CLASS_CONDITIONAL", "KINDS", "NoiseSpec", "apply_noise", "corrupt_labels",
           "expected_rate", "read_label_file", "realized_rate", "transition_matrix"]  # fmt: skip
KINDS = tuple(NOISE_KINDS)
CLASS_CONDITIONAL = tuple(name for name, k in NOISE_KINDS.items() if k.matrix is not None)


@dataclass
class NoiseSpec:
    """Config group ``data.noise``: kind, rate τ, count, IDN features/std, file (docs/design.md, "Data").

    ``features`` selects the IDN features of ``kind: instance``: ``raw`` (default, as in Xia et al.'s official
    code: the flattened image, here scaled to [0, 1]) or ``normalized`` (each feature standardized to zero mean /
    unit std over the training samples being corrupted, see :func:`corrupt_labels`). Other kinds have no
    features: there the option is accepted and has no effect (like ``idn_std``).
    """

    kind: str = "none"
    rate: float = 0.0
    count: Literal["sampled", "exact"] = "sampled"
    features: Literal["raw", "normalized"] = "raw"
    file: str | None = None
    file_key: str | None = None
    idn_std: float = 0.1

    def validate(self, num_classes: int) -> NoiseSpec:
        """Raise ConfigError for an unknown kind, τ ∉ [0, 1), unidentifiable symmetric τ or bad options."""
        kind = _check_kind_rate(self.kind, self.rate, num_classes, self.count)
        one_of("noise.features", self.features, ("raw", "normalized"))
        if not self.idn_std > 0:
            raise ConfigError(f"noise.idn_std = {self.idn_std}: must be > 0")
        if not kind.takes_rate and self.rate != 0:
            raise ConfigError(f"noise.rate = {self.rate}: noise.kind = {self.kind!r} takes no rate (use 0)")
        if kind.from_file and not self.file:
            raise ConfigError(f"noise.file = None: noise.kind = {self.kind!r} needs the path of a label file")
        return self

    @property
    def noise_kind(self) -> NoiseKind:
        """The registered kind of `kind` (`lnl.data.noise_kinds`)."""
        return noise_kind(self.kind)

    @property
    def tag(self) -> str:
        """Short run-name tag, e.g. ``sym40``, ``idn20``, ``file-worse_label``, ``clean``."""
        kind = noise_kind(self.kind)
        if kind.from_file:
            return f"{kind.tag}-{self.file_key or Path(self.file or 'labels').stem}"
        if not kind.takes_rate:
            return kind.tag
        tag = f"{kind.tag}{self.rate * 100:g}"
        if kind.per_sample and self.features == "normalized":
            tag += "_norm"
        return tag + ("_exact" if self.count == "exact" else "")


def _check_kind_rate(kind: str, rate: float, num_classes: int, count: str = "sampled") -> NoiseKind:
    noise = noise_kind(kind)
    one_of("noise.count", count, ("sampled", "exact"))
    if count == "exact" and noise.matrix is None:
        raise ConfigError(f"noise.count = 'exact': undefined for noise.kind = {kind!r}; use 'sampled'")
    if num_classes < 2:
        raise ConfigError(f"num_classes = {num_classes}: noise needs at least 2 classes")
    if not (isinstance(rate, (int, float, np.floating)) and 0.0 <= rate < 1.0):
        raise ConfigError(f"noise.rate = {rate}: must be in [0, 1)")
    noise.check(rate, num_classes)
    return noise


def cifar10_asymmetric_map() -> np.ndarray:
    """CIFAR-10 truck→automobile, bird→airplane, deer→horse, cat↔dog (Patrini et al. 2017; EMLC App. E)."""
    m = np.arange(10)
    m[[9, 2, 4, 3, 5]] = [1, 0, 7, 5, 3]
    return m


def superclass_next_map(coarse_of_fine) -> np.ndarray:
    """CIFAR-100: the next fine class (cyclic) in the super-class (Patrini et al. 2017; EMLC App. E)."""
    coarse = np.asarray(coarse_of_fine)
    if coarse.ndim != 1 or not np.issubdtype(coarse.dtype, np.integer):
        raise ConfigError(f"coarse_labels: expected a 1-D integer array (fine -> coarse), got {coarse.shape}")
    m = np.arange(coarse.size)
    for s in np.unique(coarse):
        members = np.flatnonzero(coarse == s)  # ascending
        m[members] = np.roll(members, -1)
    return m


def transition_matrix(
    kind: str, rate: float, num_classes: int, *, seed: int = 0, class_map=None, coarse_labels=None
) -> np.ndarray:
    """Class-conditional transition matrix Q[i, j] = P(ỹ = j | y = i), rows sum to 1 (Patrini et al. 2017).

    ``symmetric`` (τ/(C−1) off the diagonal) and ``pairflip`` (c → c+1) are Co-teaching's (Han et al., NeurIPS
    2018, arXiv:1804.06872); ``uniform`` is the "symmetric" noise of MLC / EMLC (EMLC App. E: a uniform label
    over all C classes). ``asymmetric`` uses ``class_map`` (class -> target; identity = kept) or, for
    CIFAR-100, the super-class map built from ``coarse_labels``; ``random_flip`` draws one other target per
    class from ``seed``; ``flip2`` is MW-Net's ``flip_labels_C_two`` (official ``load_corrupted_data.py``, Shu et
    al., NeurIPS 2019): 1 − τ on the diagonal and τ/2 on each of two distinct other classes, drawn per class
    uniformly without replacement from ``seed`` (the official code draws them from ``np.random.seed(1)``, and
    then draws every label independently from its row: ``count: sampled``); ``block5`` is the Patrini et al. / ELR CIFAR-100 matrix (next index inside
    consecutive blocks of 5, cyclic).
    """
    noise = _check_kind_rate(kind, rate, num_classes)
    if noise.matrix is None:
        raise ConfigError(f"noise.kind = {kind!r}: has no transition matrix; allowed are {CLASS_CONDITIONAL}")
    if class_map is None and coarse_labels is not None:
        class_map = superclass_next_map(coarse_labels)
    return noise.matrix(float(rate), num_classes, seed, class_map)


def _truncnorm_sample(rng: np.random.Generator, mu: float, std: float, n: int) -> np.ndarray:
    out = np.empty(0)
    while out.size < n:  # rejection sampling on [0, 1]
        z = rng.normal(mu, std, size=max(2 * (n - out.size), 16))
        out = np.concatenate([out, z[(z >= 0.0) & (z <= 1.0)]])
    return out[:n]


def _part_sizes(parts, n: int) -> list[int]:
    """Sizes of the consecutive parts of ``n`` samples (None: one part); ConfigError unless they sum to n."""
    if parts is None:
        return [n]
    sizes = [int(k) for k in parts]
    if not sizes or min(sizes) < 0 or sum(sizes) != n:
        raise ConfigError(f"parts = {list(parts)}: expected non-negative part sizes summing to {n} labels")
    return sizes


def _feature_standardizer(x: np.ndarray, n_ref: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (ddof 0, float64) of the first ``n_ref`` rows (all rows if n_ref = 0).

    Computed in row chunks (no float64 copy of the whole matrix); a constant feature gets std 1.
    """
    ref = x[: n_ref or len(x)]
    if len(ref) == 0:
        return np.zeros(x.shape[1]), np.ones(x.shape[1])
    mean = np.mean(ref, axis=0, dtype=np.float64)
    sq = np.zeros(x.shape[1])
    for i in range(0, len(ref), chunk):
        sq += np.square(ref[i : i + chunk].astype(np.float64) - mean).sum(axis=0)
    std = np.sqrt(sq / len(ref))
    return mean, np.where(std > 0, std, 1.0)


def _idn_probabilities(
    labels, features, rate: float, num_classes: int, seed: int, idn_std: float = 0.1, *, parts=None,
    normalize_features: bool = False,
):  # fmt: skip
    """Xia et al. 2020 IDN: per-sample label distributions P [n, C], flip rates q [n]; P[i, y_i] = 1 - q_i.

    ``parts`` (sizes of consecutive parts, default one part) share one noise process: the projection W (one
    N(0, 1) matrix [d, C] per true class, drawn from ``seed`` after part 0's flip rates), the flip-rate
    distribution Normal(τ, idn_std) truncated to [0, 1] and, with ``normalize_features``, the per-feature
    mean / std of part 0. Part 0's flip rates and P are exactly those of a one-part call on part 0 alone;
    part k ≥ 1 draws its own flip rates q_i from the stream ``seed + k``.
    """
    y = check_labels(labels, num_classes)
    if features is None or len(features) != y.size:
        got = "None" if features is None else len(features)
        raise ConfigError(f"features: noise.kind = 'instance' needs one row per label ({y.size}), got {got}")
    sizes = _part_sizes(parts, y.size)
    x = np.asarray(features).reshape(y.size, -1)  # converted to float64 one class (and part) at a time
    mean, std = _feature_standardizer(x, sizes[0]) if normalize_features else (None, None)
    bounds = np.cumsum([0] + sizes)
    rng = np.random.default_rng(seed)  # part 0's flip rates, then W
    q = np.concatenate([
        _truncnorm_sample(rng if k == 0 else np.random.default_rng(seed + k), rate, idn_std, n)
        for k, n in enumerate(sizes)
    ])  # fmt: skip
    P = np.empty((y.size, num_classes))
    for c in range(num_classes):  # W[c] ~ N(0, 1) of shape (d, C), one per true class
        w = rng.standard_normal((x.shape[1], num_classes))
        for lo, hi in zip(bounds[:-1], bounds[1:]):  # one product per part: part 0 as in a one-part call
            idx = lo + np.flatnonzero(y[lo:hi] == c)
            xc = x[idx].astype(np.float64)
            s = ((xc - mean) / std if normalize_features else xc) @ w
            s[:, c] = -np.inf
            s = np.exp(s - s.max(axis=1, keepdims=True))
            P[idx] = q[idx, None] * s / s.sum(axis=1, keepdims=True)
            P[idx, c] = 1.0 - q[idx]
    return P, q


def corrupt_labels(
    labels, kind: str, rate: float, num_classes: int, *, seed: int, count: str = "sampled",
    class_map=None, features=None, idn_std: float = 0.1, normalize_features: bool = False, parts=None,
) -> np.ndarray:  # fmt: skip
    """Return a noisy copy of ``labels``; selection is always by the true label.

    ``sampled`` draws each label from Q[y]; ``exact`` makes exactly round(w_c·n_c) labels of class c wrong
    (w_c = τ, or τ(C-1)/C for ``uniform``, 0 for classes a map keeps), wrong labels drawn from Q[c] off the
    diagonal. ``instance`` is the Xia et al. 2020 IDN generator on ``features`` ([n, ...], flattened per row);
    ``normalize_features`` standardizes each feature to zero mean / unit std over the (first part's) samples
    before the projection (``noise.features: normalized``; ignored by the other kinds).

    ``parts``: sizes of consecutive parts of ``labels`` (e.g. training then validation samples), default one
    part. All parts are corrupted by the SAME noise process, i.e. the parameters drawn from ``seed`` and part 0
    are shared: the transition matrix (the ``random_flip`` class map), and for ``instance`` the projection W,
    the flip-rate distribution and the feature standardization. Only the per-sample draws differ: part 0 gets
    exactly the labels of a one-part call on part 0 alone, part k ≥ 1 the per-sample streams of ``seed + k``
    (so where the process does not depend on the seed, e.g. ``symmetric``, part k's labels are those of a
    one-part call with ``seed + k``, as validation labels were drawn before they shared the process).
    ``exact`` counts hold within each part.
    """
    noise = _check_kind_rate(kind, rate, num_classes, count)
    y = check_labels(labels, num_classes)
    sizes = _part_sizes(parts, y.size)
    bounds = np.cumsum([0] + sizes)
    if noise.from_file:
        raise ConfigError(
            f"noise.kind = {kind!r}: labels come from a file; use apply_noise / read_label_file"
        )
    if noise.per_sample:
        if rate == 0:
            return y
        P, _ = _idn_probabilities(y, features, rate, num_classes, seed, idn_std, parts=sizes,
                                  normalize_features=normalize_features)  # fmt: skip
        u = np.concatenate([np.random.default_rng([seed + k, 2]).random(n) for k, n in enumerate(sizes)])
        return np.minimum((np.cumsum(P, axis=1) < u[:, None]).sum(axis=1), num_classes - 1)  # inverse CDF
    Q = transition_matrix(kind, rate, num_classes, seed=seed, class_map=class_map)
    noisy = y.copy()
    w = noise.exact_fraction(rate, num_classes)  # a moved class's wrong fraction: round(w·n_c) exact
    wrong = np.where(np.diag(Q) < 1.0, w, 0.0)
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        rng = np.random.default_rng(seed + k)
        for c in range(num_classes):
            idx = lo + np.flatnonzero(y[lo:hi] == c)
            if count == "sampled":
                noisy[idx] = rng.choice(num_classes, size=idx.size, p=Q[c])
                continue
            n_wrong = int(round(wrong[c] * idx.size))
            if n_wrong:
                off = np.where(np.arange(num_classes) == c, 0.0, Q[c])
                noisy[np.sort(rng.permutation(idx)[:n_wrong])] = rng.choice(
                    num_classes, size=n_wrong, p=off / off.sum()
                )
    return noisy


def apply_noise(
    spec: NoiseSpec, labels, num_classes: int, *, seed: int, class_map=None, features=None, file_labels=None,
    parts=None,
) -> np.ndarray:  # fmt: skip
    """Apply a :class:`NoiseSpec` after validating it; used by the data module.

    ``parts``: sizes of consecutive parts of ``labels`` corrupted by one noise process (training samples
    first, then validation samples; see :func:`corrupt_labels`). ``file_labels``: labels read from
    ``spec.file``, aligned with ``labels``. Without them, kind ``file`` reads ``spec.file`` itself and expects
    ``labels`` to be the source's whole training part (checked against ``clean_label`` when the file has one).
    """
    if spec.validate(num_classes).noise_kind.from_file:
        if file_labels is None:
            y = check_labels(labels, num_classes)
            return read_label_file(spec.file, key=spec.file_key, num_classes=num_classes,
                                   expected_len=y.size, clean_labels=y)  # fmt: skip
        out = check_labels(file_labels, num_classes, f"noise.file = {spec.file}")
        if out.size != len(labels):
            raise ConfigError(f"noise.file = {spec.file}: {out.size} labels, expected {len(labels)}")
        return out
    return corrupt_labels(labels, spec.kind, spec.rate, num_classes, seed=seed, count=spec.count,
                          class_map=class_map, features=features, idn_std=spec.idn_std,
                          normalize_features=spec.features == "normalized", parts=parts)  # fmt: skip


def realized_rate(true, noisy) -> float:
    """Fraction of wrong labels, ignoring unknown true labels (-1); NaN if all are unknown."""
    t, n = np.asarray(true), np.asarray(noisy)
    return float(np.mean(t[t >= 0] != n[t >= 0])) if (t >= 0).any() else float("nan")


def expected_rate(kind: str, rate: float, num_classes: int, idn_std: float = 0.1, *, class_map=None) -> float:
    """Expected wrong-label rate for balanced classes (the README's "Noise protocols" table).

    ``asymmetric``: τ on the source classes, or τ·(fraction of moved classes) when ``class_map`` is given;
    ``instance``: the mean of Normal(τ, idn_std) truncated to [0, 1] (Xia et al. 2020); ``file``: NaN.
    """
    return _check_kind_rate(kind, rate, num_classes).expected(rate, num_classes, idn_std, class_map)
