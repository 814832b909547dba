"""Label-noise generators, transition matrices and label-file reading.

Class-conditional noise from a transition matrix (Patrini et al., "Making deep neural networks robust to label
noise: a loss correction approach", CVPR 2017, arXiv:1609.03683; the DML paper's §5.1), instance-dependent
noise after Xia et al. ("Part-dependent label noise", NeurIPS 2020, arXiv:2006.07836), label files of CIFAR-N
(Wei et al., "Learning with noisy labels revisited", ICLR 2022, arXiv:2110.12088).

Pure numpy functions: they return new arrays, never mutate their inputs, and are deterministic in ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lnl.errors import ConfigError

CLASS_CONDITIONAL = (
    "none",
    "symmetric",
    "uniform",
    "asymmetric",
    "pairflip",
    "random_flip",
    "flip2",
    "block5",
)
KINDS = CLASS_CONDITIONAL + ("instance", "file")
_TAGS = {"symmetric": "sym", "uniform": "unif", "asymmetric": "asym", "pairflip": "pair",
         "random_flip": "flip", "flip2": "flip2_", "block5": "block", "instance": "idn"}  # fmt: skip
CIFARN_KEYS = ("aggre_label", "worse_label", "random_label1", "random_label2", "random_label3", "noisy_label")
_KEY_ALIASES = {"aggre": "aggre_label", "worst": "worse_label", "rand1": "random_label1",
                "rand2": "random_label2", "rand3": "random_label3", "noisy100": "noisy_label"}  # fmt: skip


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
        _check_kind_rate(self.kind, self.rate, num_classes, self.count)
        if self.features not in ("raw", "normalized"):
            raise ConfigError(f"noise.features = {self.features!r}: allowed are 'raw', 'normalized'")
        if not self.idn_std > 0:
            raise ConfigError(f"noise.idn_std = {self.idn_std}: must be > 0")
        if self.kind in ("none", "file") and self.rate != 0:
            raise ConfigError(f"noise.rate = {self.rate}: noise.kind = {self.kind!r} takes no rate (use 0)")
        if self.kind == "file" and not self.file:
            raise ConfigError("noise.file = None: noise.kind = 'file' needs the path of a label file")
        return self

    @property
    def tag(self) -> str:
        """Short run-name tag, e.g. ``sym40``, ``idn20``, ``file-worse_label``, ``clean``."""
        if self.kind == "none":
            return "clean"
        if self.kind == "file":
            return f"file-{self.file_key or Path(self.file or 'labels').stem}"
        tag = f"{_TAGS.get(self.kind, self.kind)}{self.rate * 100:g}"
        if self.kind == "instance" and self.features == "normalized":
            tag += "_norm"
        return tag + ("_exact" if self.count == "exact" else "")


def _check_kind_rate(kind: str, rate: float, num_classes: int, count: str = "sampled") -> None:
    if kind not in KINDS:
        raise ConfigError(f"noise.kind = {kind!r}: allowed are {', '.join(KINDS)}")
    if count not in ("sampled", "exact"):
        raise ConfigError(f"noise.count = {count!r}: allowed are 'sampled', 'exact'")
    if count == "exact" and kind in ("instance", "file"):
        raise ConfigError(f"noise.count = 'exact': undefined for noise.kind = {kind!r}; use 'sampled'")
    if num_classes < 2:
        raise ConfigError(f"num_classes = {num_classes}: noise needs at least 2 classes")
    if not (isinstance(rate, (int, float, np.floating)) and 0.0 <= rate < 1.0):
        raise ConfigError(f"noise.rate = {rate}: must be in [0, 1)")
    if kind == "symmetric" and rate >= (num_classes - 1) / num_classes:
        bound = f"(C-1)/C = {(num_classes - 1) / num_classes:.4g}"
        raise ConfigError(f"noise.rate = {rate}: symmetric noise needs rate < {bound} (identifiability)")
    if kind == "flip2" and num_classes < 3:
        raise ConfigError(f"num_classes = {num_classes}: noise.kind = 'flip2' needs at least 3 classes")
    if kind == "block5" and num_classes % 5:
        raise ConfigError(f"num_classes = {num_classes}: noise.kind = 'block5' needs a multiple of 5 classes")


def _check_labels(labels, num_classes: int, what: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ConfigError(f"{what}: expected a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}")
    bad = arr[(arr < 0) | (arr >= num_classes)]
    if bad.size:
        raise ConfigError(f"{what}: label {int(bad[0])} out of range; allowed are 0..{num_classes - 1}")
    return arr.astype(np.int64)  # a copy


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
    _check_kind_rate(kind, rate, num_classes)
    C, t = num_classes, float(rate)
    if kind not in CLASS_CONDITIONAL:
        raise ConfigError(f"noise.kind = {kind!r}: has no transition matrix; allowed are {CLASS_CONDITIONAL}")
    if kind == "none":
        return np.eye(C)
    if kind == "symmetric":
        return np.full((C, C), t / (C - 1)) + np.eye(C) * (1.0 - t - t / (C - 1))
    if kind == "uniform":
        return np.full((C, C), t / C) + np.eye(C) * (1.0 - t)
    if kind == "asymmetric":
        if class_map is None and coarse_labels is not None:
            class_map = superclass_next_map(coarse_labels)
        if class_map is None:
            raise ConfigError("noise.kind = 'asymmetric': this dataset defines no class map; pass class_map")
        target = _check_labels(class_map, C, "class_map")
        if target.size != C:
            raise ConfigError(f"class_map: length {target.size}, expected num_classes = {C}")
    elif kind == "pairflip":
        target = (np.arange(C) + 1) % C
    elif kind == "random_flip":
        draws = np.random.default_rng([seed, 1]).integers(0, C - 1, size=C)
        target = draws + (draws >= np.arange(C))  # uniform over the C-1 other classes
    elif kind == "flip2":
        rng, Q = np.random.default_rng([seed, 3]), np.eye(C) * (1.0 - t)
        for c in range(C):  # two distinct other classes, uniform without replacement
            Q[c, rng.choice(np.delete(np.arange(C), c), 2, replace=False)] = t / 2
        return Q
    else:  # block5
        target = np.arange(C) // 5 * 5 + (np.arange(C) % 5 + 1) % 5
    Q = np.eye(C)
    moved = np.flatnonzero(target != np.arange(C))
    Q[moved, moved] = 1.0 - t
    Q[moved, target[moved]] = t
    return Q


def _truncnorm_mean(mu: float, std: float, lo: float = 0.0, hi: float = 1.0) -> float:
    a, b = (lo - mu) / std, (hi - mu) / std
    pdf = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2)))  # noqa: E731
    return mu + std * (pdf(a) - pdf(b)) / (cdf(b) - cdf(a))


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
    y = _check_labels(labels, num_classes)
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
    _check_kind_rate(kind, rate, num_classes, count)
    y = _check_labels(labels, num_classes)
    sizes = _part_sizes(parts, y.size)
    bounds = np.cumsum([0] + sizes)
    if kind == "file":
        raise ConfigError("noise.kind = 'file': labels come from a file; use apply_noise / read_label_file")
    if kind == "instance":
        if rate == 0:
            return y
        P, _ = _idn_probabilities(y, features, rate, num_classes, seed, idn_std, parts=sizes,
                                  normalize_features=normalize_features)  # fmt: skip
        u = np.concatenate([np.random.default_rng([seed + k, 2]).random(n) for k, n in enumerate(sizes)])
        return np.minimum((np.cumsum(P, axis=1) < u[:, None]).sum(axis=1), num_classes - 1)  # inverse CDF
    Q = transition_matrix(kind, rate, num_classes, seed=seed, class_map=class_map)
    noisy = y.copy()
    w = rate * (num_classes - 1) / num_classes if kind == "uniform" else rate  # from τ: round(τ·n_c) exact
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
    spec.validate(num_classes)
    if spec.kind == "file":
        if file_labels is None:
            y = _check_labels(labels, num_classes)
            return read_label_file(spec.file, key=spec.file_key, num_classes=num_classes,
                                   expected_len=y.size, clean_labels=y)  # fmt: skip
        out = _check_labels(file_labels, num_classes, f"noise.file = {spec.file}")
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
    _check_kind_rate(kind, rate, num_classes)
    if kind == "none":
        return 0.0
    if kind == "uniform":
        return rate * (num_classes - 1) / num_classes
    if kind == "instance":
        return _truncnorm_mean(rate, idn_std) if rate > 0 else 0.0
    if kind == "file":
        return float("nan")
    if kind == "asymmetric" and class_map is not None:
        return rate * float(np.mean(np.asarray(class_map) != np.arange(num_classes)))
    return float(rate)


def _safe_torch_load(path: Path):
    import torch  # only needed for .pt label files

    rec = (getattr(np, "_core", None) or np.core).multiarray._reconstruct  # numpy 2 / numpy 1 pickles
    allowed = [(rec, f"numpy.{m}.multiarray._reconstruct") for m in ("core", "_core")]
    allowed += [np.ndarray, np.dtype] + [
        getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", None)) if n.endswith("DType")
    ]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything outside the allow-list: never executed
        raise ConfigError(
            f"noise.file = {path}: refused or unreadable ({type(e).__name__}); only torch.save files of "
            "numpy arrays/tensors (optionally in a dict) are loaded, never arbitrary pickles"
        ) from None


def _pick_key(obj: dict, key: str | None, path: Path):
    keys = [k for k in obj if k != "clean_label"]
    key = _KEY_ALIASES.get(key, key) if key else None
    if key is None:
        known = [k for k in keys if k in CIFARN_KEYS]
        if len(keys) == 1 or len(known) == 1:
            key = keys[0] if len(keys) == 1 else known[0]
        else:
            raise ConfigError(f"noise.file_key = None: {path} has several label arrays; choose one of {keys}")
    if key not in obj:
        raise ConfigError(f"noise.file_key = {key!r}: not in {path}; available are {keys}")
    return obj[key]


def _read_csv(path: Path, expected_len: int) -> np.ndarray:
    rows = [r.split(",") for r in path.read_text().splitlines() if r.strip()]
    if rows and not rows[0][-1].strip().lstrip("-").isdigit():
        rows = rows[1:]  # header
    try:
        table = np.array([[int(v) for v in r] for r in rows], dtype=np.int64).reshape(len(rows), -1)
    except ValueError:
        raise ConfigError(f"noise.file = {path}: expected 'index,label' rows or one label per line") from None
    if table.shape[1] == 1:
        return table[:, 0]
    if table.shape[1] != 2 or not np.array_equal(np.sort(table[:, 0]), np.arange(expected_len)):
        raise ConfigError(f"noise.file = {path}: 'index,label' rows need each of 0..{expected_len - 1} once")
    out = np.empty(expected_len, dtype=np.int64)
    out[table[:, 0]] = table[:, 1]
    return out


def read_label_file(
    path, *, key: str | None = None, num_classes: int, expected_len: int, clean_labels=None
) -> np.ndarray:
    """Read noisy labels for ``noise.kind: file``: CIFAR-N (Wei et al. 2022) / CAL ``.pt`` (safe, allow-listed
    unpickling), ``.npy`` (no pickle), ``.csv`` (``index,label`` or one label per line).

    Wrong length, out-of-range labels or a ``clean_label`` entry unlike ``clean_labels``: ConfigError.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"noise.file = {path}: file not found")
    suffix, clean = path.suffix.lower(), None
    if suffix in (".pt", ".pth"):
        obj = _safe_torch_load(path)
    elif suffix == ".npy":
        try:
            obj = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ConfigError(f"noise.file = {path}: unreadable without pickle ({e})") from None
    elif suffix == ".csv":
        obj = _read_csv(path, expected_len)
    else:
        raise ConfigError(f"noise.file = {path}: extension {suffix!r}; allowed are .pt, .pth, .npy, .csv")
    if isinstance(obj, dict):
        clean = obj.get("clean_label")
        obj = _pick_key(obj, key, path)
    arr = np.asarray(obj.numpy() if hasattr(obj, "numpy") else obj)
    if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    arr = np.squeeze(arr) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1 or arr.size != expected_len:
        raise ConfigError(
            f"noise.file = {path}: {arr.size} labels, shape {arr.shape}; expected {expected_len}"
        )
    arr = _check_labels(arr, num_classes, f"noise.file = {path}")
    if clean is not None and clean_labels is not None:
        clean = np.asarray(clean.numpy() if hasattr(clean, "numpy") else clean).reshape(-1)
        mism = int(np.sum(clean != np.asarray(clean_labels))) if clean.size == arr.size else clean.size
        if clean.size != arr.size or mism:
            raise ConfigError(
                f"noise.file = {path}: clean_label differs from the dataset's labels at {mism} positions "
                "(wrong file for this dataset, or a different sample order)"
            )
    return arr
