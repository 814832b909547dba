"""The noise kinds of ``data.noise.kind`` as registered objects: what each draws, allows and is expected to do.

Class-conditional kinds carry their transition matrix Q[i, j] = P(ỹ = j | y = i) (Patrini et al., "Making deep
neural networks robust to label noise: a loss correction approach", CVPR 2017, arXiv:1609.03683); ``instance``
is Xia et al.'s part-dependent noise ("Part-dependent label noise", NeurIPS 2020, arXiv:2006.07836), drawn in
`lnl.data.noise`; ``file`` reads labels (`lnl.data.label_files`). A new kind is one `register_noise_kind` call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lnl.data.label_files import check_labels
from lnl.errors import ConfigError
from lnl.validation import registered

Matrix = Callable[[float, int, int, "np.ndarray | None"], np.ndarray]  # (τ, C, seed, class_map) -> Q


@dataclass(frozen=True)
class NoiseKind:
    """One noise protocol.

    ``matrix`` (class-conditional kinds): Q from (τ, C, seed, class_map); ``tag``: the run-name prefix;
    ``exact_fraction``: the wrong fraction of a moved class under ``count: exact`` (τ, or τ(C-1)/C for
    ``uniform``); ``expected``: the expected wrong-label rate for balanced classes (τ, C, idn_std, class_map);
    ``check``: kind-specific refusals of (τ, C).
    """

    name: str
    tag: str
    matrix: Matrix | None = None
    takes_rate: bool = True  # False: rate must be 0 (none, file)
    per_sample: bool = False  # instance-dependent: needs the images' features
    from_file: bool = False  # labels read from `noise.file`
    needs_class_map: bool = False  # a semantic class map of the source (asymmetric)
    exact_fraction: Callable[[float, int], float] = lambda t, c: t
    expected: Callable[[float, int, float, np.ndarray | None], float] = lambda t, c, s, m: float(t)
    check: Callable[[float, int], None] = lambda t, c: None

    @property
    def adds_noise(self) -> bool:
        """Whether the kind changes labels (every kind but ``none``)."""
        return self.takes_rate or self.from_file


NOISE_KINDS: dict[str, NoiseKind] = {}


def register_noise_kind(kind: NoiseKind) -> NoiseKind:
    """Add `kind` to `NOISE_KINDS` under its name."""
    NOISE_KINDS[kind.name] = kind
    return kind


def noise_kind(name: str) -> NoiseKind:
    """The registered kind `name`; ConfigError naming the allowed kinds otherwise."""
    return registered("noise.kind", name, NOISE_KINDS)


def _moved(target: np.ndarray, t: float) -> np.ndarray:
    """Q of a class map: 1 − τ on the diagonal and τ on the target of each class the map moves."""
    C = target.size
    Q = np.eye(C)
    moved = np.flatnonzero(target != np.arange(C))
    Q[moved, moved] = 1.0 - t
    Q[moved, target[moved]] = t
    return Q


def _asymmetric(t: float, C: int, seed: int, class_map: np.ndarray | None) -> np.ndarray:
    if class_map is None:
        raise ConfigError("noise.kind = 'asymmetric': this dataset defines no class map; pass class_map")
    target = check_labels(class_map, C, "class_map")
    if target.size != C:
        raise ConfigError(f"class_map: length {target.size}, expected num_classes = {C}")
    return _moved(target, t)


def _random_flip(t: float, C: int, seed: int, class_map: np.ndarray | None) -> np.ndarray:
    draws = np.random.default_rng([seed, 1]).integers(0, C - 1, size=C)
    return _moved(draws + (draws >= np.arange(C)), t)  # uniform over the C-1 other classes


def _flip2(t: float, C: int, seed: int, class_map: np.ndarray | None) -> np.ndarray:
    rng, Q = np.random.default_rng([seed, 3]), np.eye(C) * (1.0 - t)
    for c in range(C):  # two distinct other classes, uniform without replacement
        Q[c, rng.choice(np.delete(np.arange(C), c), 2, replace=False)] = t / 2
    return Q


def _truncnorm_mean(mu: float, std: float, lo: float = 0.0, hi: float = 1.0) -> float:
    a, b = (lo - mu) / std, (hi - mu) / std
    pdf = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2)))  # noqa: E731
    return mu + std * (pdf(a) - pdf(b)) / (cdf(b) - cdf(a))


def _symmetric_check(t: float, C: int) -> None:
    if t >= (C - 1) / C:
        bound = f"(C-1)/C = {(C - 1) / C:.4g}"
        raise ConfigError(f"noise.rate = {t}: symmetric noise needs rate < {bound} (identifiability)")


def _flip2_check(t: float, C: int) -> None:
    if C < 3:
        raise ConfigError(f"num_classes = {C}: noise.kind = 'flip2' needs at least 3 classes")


def _block5_check(t: float, C: int) -> None:
    if C % 5:
        raise ConfigError(f"num_classes = {C}: noise.kind = 'block5' needs a multiple of 5 classes")


def _asymmetric_expected(t: float, C: int, s: float, class_map: np.ndarray | None) -> float:
    return t * float(np.mean(np.asarray(class_map) != np.arange(C))) if class_map is not None else float(t)


for _kind in (
    NoiseKind("none", "clean", lambda t, C, s, m: np.eye(C), takes_rate=False, expected=lambda t, c, s, m: 0.0),
    NoiseKind("symmetric", "sym", lambda t, C, s, m: np.full((C, C), t / (C - 1)) + np.eye(C) * (1.0 - t - t / (C - 1)),
              check=_symmetric_check),
    NoiseKind("uniform", "unif", lambda t, C, s, m: np.full((C, C), t / C) + np.eye(C) * (1.0 - t),
              exact_fraction=lambda t, c: t * (c - 1) / c, expected=lambda t, c, s, m: t * (c - 1) / c),
    NoiseKind("asymmetric", "asym", _asymmetric, needs_class_map=True, expected=_asymmetric_expected),
    NoiseKind("pairflip", "pair", lambda t, C, s, m: _moved((np.arange(C) + 1) % C, t)),
    NoiseKind("random_flip", "flip", _random_flip),
    NoiseKind("flip2", "flip2_", _flip2, check=_flip2_check),
    NoiseKind("block5", "block", lambda t, C, s, m: _moved(np.arange(C) // 5 * 5 + (np.arange(C) % 5 + 1) % 5, t),
              check=_block5_check),
    NoiseKind("instance", "idn", per_sample=True,
              expected=lambda t, c, s, m: _truncnorm_mean(t, s) if t > 0 else 0.0),
    NoiseKind("file", "file", takes_rate=False, from_file=True, expected=lambda t, c, s, m: float("nan")),
):  # fmt: skip
    register_noise_kind(_kind)
