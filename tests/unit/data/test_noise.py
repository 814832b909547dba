"""Noise kinds, transition matrices, IDN and label files."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from lnl.data.noise import (
    KINDS,
    NoiseSpec,
    _idn_probabilities,
    apply_noise,
    cifar10_asymmetric_map,
    corrupt_labels,
    expected_rate,
    read_label_file,
    realized_rate,
    superclass_next_map,
    transition_matrix,
)
from lnl.errors import ConfigError

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _labels(C: int, sizes, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(C), sizes))


def _coarse_of_fine(seed: int = 0) -> np.ndarray:
    """A CIFAR-100-like fine -> coarse map: 20 super-classes of 5 fine classes each, shuffled."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(20), 5))


def _literature_block5(C: int, t: float) -> np.ndarray:
    """Patrini et al. / ELR `build_for_cifar100`: (1-t) I, t on i -> i+1 and last -> first, per block."""
    block = (1 - t) * np.eye(5)
    for i in range(4):
        block[i, i + 1] = t
    block[4, 0] = t
    Q = np.zeros((C, C))
    for b in range(C // 5):
        Q[b * 5 : b * 5 + 5, b * 5 : b * 5 + 5] = block
    return Q


def _truncnorm_mean(mu: float, sd: float) -> float:
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    Phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    a, b = -mu / sd, (1 - mu) / sd
    return mu + sd * (phi(a) - phi(b)) / (Phi(b) - Phi(a))


# ---------------------------------------------------------------- transition matrices


@pytest.mark.parametrize("C", [2, 10, 100])
def test_symmetric_and_uniform_matrices(C):
    t = 0.4
    Q = transition_matrix("symmetric", t, C)
    np.testing.assert_allclose(np.diag(Q), 1 - t)
    np.testing.assert_allclose(Q[~np.eye(C, dtype=bool)], t / (C - 1))
    U = transition_matrix("uniform", t, C)
    np.testing.assert_allclose(U, (1 - t) * np.eye(C) + t / C)
    for M in (Q, U):
        np.testing.assert_allclose(M.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(transition_matrix("none", 0.0, C), np.eye(C))


def test_pairflip_matrix():
    Q = transition_matrix("pairflip", 0.45, 10)
    expected = 0.55 * np.eye(10)
    expected[np.arange(10), (np.arange(10) + 1) % 10] = 0.45
    np.testing.assert_allclose(Q, expected)


def test_random_flip_one_target_per_class_from_seed():
    t, C = 0.3, 10

    def targets(seed: int) -> np.ndarray:
        Q = transition_matrix("random_flip", t, C, seed=seed)
        np.testing.assert_allclose(Q.sum(axis=1), 1.0)
        np.testing.assert_allclose(np.diag(Q), 1 - t)
        off = Q - np.diag(np.diag(Q))
        assert ((off > 0).sum(axis=1) == 1).all()  # exactly one other target per class
        np.testing.assert_allclose(off.max(axis=1), t)
        return off.argmax(axis=1)

    a = targets(5)
    np.testing.assert_array_equal(a, targets(5))
    assert all(not np.array_equal(a, targets(s)) for s in range(6, 12))
    hits = np.zeros((C, C))
    for s in range(200):  # over seeds, every (class, other class) pair is drawn
        hits[np.arange(C), targets(s)] += 1
    assert (np.diag(hits) == 0).all() and (hits[~np.eye(C, dtype=bool)] > 0).all()


@pytest.mark.parametrize("C", [5, 100])
def test_block5_matches_literature_matrix(C):
    Q = transition_matrix("block5", 0.4, C)
    np.testing.assert_array_equal(Q, _literature_block5(C, 0.4))
    assert Q[4, 0] == 0.4 and Q[0, 1] == 0.4 and (C < 100 or (Q[99, 95] == 0.4 and Q[97, 98] == 0.4))
    with pytest.raises(ConfigError, match="num_classes = 12"):
        transition_matrix("block5", 0.4, 12)


def test_cifar10_semantic_map():
    m = cifar10_asymmetric_map()
    moves = {CIFAR10[c]: CIFAR10[m[c]] for c in range(10) if m[c] != c}
    assert moves == {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}
    Q = transition_matrix("asymmetric", 0.4, 10, class_map=m)
    for c in range(10):
        expected = np.eye(10)[c] if m[c] == c else 0.6 * np.eye(10)[c] + 0.4 * np.eye(10)[m[c]]
        np.testing.assert_allclose(Q[c], expected)


def test_cifar100_superclass_next_map():
    coarse = _coarse_of_fine(3)
    m = superclass_next_map(coarse)
    for f in range(100):
        members = np.flatnonzero(coarse == coarse[f])
        bigger = members[members > f]
        assert m[f] == (bigger.min() if bigger.size else members.min())
    assert (coarse[m] == coarse).all() and (m != np.arange(100)).all()
    np.testing.assert_array_equal(
        transition_matrix("asymmetric", 0.3, 100, coarse_labels=coarse),
        transition_matrix("asymmetric", 0.3, 100, class_map=m),
    )
    y = _labels(100, 50)
    noisy = corrupt_labels(y, "asymmetric", 0.4, 100, seed=0, class_map=m)
    flipped = noisy != y
    assert 0.35 < flipped.mean() < 0.45
    assert (coarse[noisy] == coarse[y]).all()  # every flip stays inside its true super-class
    np.testing.assert_array_equal(noisy[flipped], m[y[flipped]])


def test_flip2_is_mwnet_flip_labels_C_two():
    """MW-Net's flip2 law: 1 − τ kept, τ/2 to each of two distinct other classes drawn uniformly per class."""
    t, C = 0.4, 10

    def pairs(seed: int) -> np.ndarray:
        Q = transition_matrix("flip2", t, C, seed=seed)
        np.testing.assert_allclose(Q.sum(axis=1), 1.0)
        np.testing.assert_allclose(np.diag(Q), 1 - t)
        off = Q - np.diag(np.diag(Q))
        assert ((off > 0).sum(axis=1) == 2).all()  # two other classes per class ...
        np.testing.assert_allclose(off[off > 0], t / 2)  # ... with τ/2 each
        return off > 0

    a = pairs(5)
    np.testing.assert_array_equal(a, pairs(5))
    assert all(not np.array_equal(a, pairs(s)) for s in range(6, 12))
    hits = sum(pairs(s).astype(float) for s in range(900))  # each other class: 2/(C−1) of the seeds
    p = 2 / (C - 1)
    sigma = math.sqrt(900 * p * (1 - p))
    assert np.diag(hits).sum() == 0
    assert np.abs(hits[~np.eye(C, dtype=bool)] - 900 * p).max() <= 4.5 * sigma
    with pytest.raises(ConfigError, match="flip2"):
        transition_matrix("flip2", t, 2)


def test_flip2_realized_transition_equals_the_law_within_sampling_error():
    """`count: sampled` draws every label from its row (the official generator): Q̂ = Q within 4.5 σ per cell."""
    t, C, n = 0.4, 10, 4000
    y = _labels(C, n)
    noisy = corrupt_labels(y, "flip2", t, C, seed=7)
    Q = transition_matrix("flip2", t, C, seed=7)
    counts = np.zeros((C, C))
    np.add.at(counts, (y, noisy), 1)
    Q_hat = counts / n
    sigma = np.sqrt(Q * (1 - Q) / n)
    assert (np.abs(Q_hat - Q) <= 4.5 * sigma + 1e-12).all()
    assert (Q_hat[Q == 0] == 0).all()
    assert abs(realized_rate(y, noisy) - t) <= 4.5 * math.sqrt(t * (1 - t) / (n * C))


# ---------------------------------------------------------------- realized rates

CASES = [  # kind, C, tau, class_map
    ("symmetric", 10, 0.4, None),
    ("symmetric", 100, 0.6, None),
    ("uniform", 10, 0.4, None),
    ("uniform", 100, 0.8, None),
    ("pairflip", 10, 0.45, None),
    ("random_flip", 10, 0.4, None),
    ("flip2", 10, 0.4, None),
    ("flip2", 100, 0.4, None),
    ("block5", 100, 0.4, None),
    ("asymmetric", 10, 0.4, cifar10_asymmetric_map()),
    ("asymmetric", 100, 0.3, superclass_next_map(_coarse_of_fine())),
    ("none", 10, 0.0, None),
]


def _wrong_rates(kind, C, t, class_map):
    moved = np.ones(C, bool) if class_map is None else class_map != np.arange(C)
    return np.where(moved, t * (C - 1) / C if kind == "uniform" else (0.0 if kind == "none" else t), 0.0)


@pytest.mark.parametrize("kind,C,t,class_map", CASES, ids=[f"{k}-{c}-{t}" for k, c, t, _ in CASES])
def test_sampled_rate_within_3_sigma(kind, C, t, class_map):
    sizes = np.random.default_rng(1).integers(150, 250, size=C) * (10 if C == 10 else 1)
    y = _labels(C, sizes)
    noisy = corrupt_labels(y, kind, t, C, seed=11, class_map=class_map)
    w = _wrong_rates(kind, C, t, class_map)
    mean, sigma = float((sizes * w).sum()), math.sqrt(float((sizes * w * (1 - w)).sum()))
    assert abs(int((noisy != y).sum()) - mean) <= 3 * sigma + 1e-9
    Q = transition_matrix(kind, t, C, seed=11, class_map=class_map)
    assert (Q[y, noisy] > 0).all()  # every observed transition is allowed by Q
    if class_map is not None or kind != "asymmetric":
        assert expected_rate(kind, t, C, class_map=class_map) == pytest.approx(float(w.mean()))


@pytest.mark.parametrize("kind,C,t,class_map", CASES, ids=[f"{k}-{c}-{t}" for k, c, t, _ in CASES])
def test_exact_count_per_class(kind, C, t, class_map):
    sizes = np.random.default_rng(2).integers(15, 60, size=C)  # odd sizes exercise rounding
    y = _labels(C, sizes, seed=4)
    noisy = corrupt_labels(y, kind, t, C, seed=3, count="exact", class_map=class_map)
    w = _wrong_rates(kind, C, t, class_map)
    wrong = np.bincount(y[noisy != y], minlength=C)
    assert wrong.tolist() == [round(float(w[c]) * int(sizes[c])) for c in range(C)]
    if kind in ("symmetric", "pairflip", "random_flip", "flip2", "block5", "asymmetric"):
        assert wrong.tolist() == [round(t * int(n)) if w[c] > 0 else 0 for c, n in enumerate(sizes)]
    Q = transition_matrix(kind, t, C, seed=3, class_map=class_map)
    assert (Q[y, noisy] > 0).all()


def test_realized_rate_ignores_unknown():
    assert realized_rate([0, 1, 2, -1], [0, 2, 2, 1]) == pytest.approx(1 / 3)
    assert math.isnan(realized_rate([-1, -1], [0, 1]))


def test_pure_and_seeded():
    y = _labels(10, 100)
    y.flags.writeable = False
    a = corrupt_labels(y, "symmetric", 0.4, 10, seed=0)
    np.testing.assert_array_equal(a, corrupt_labels(y.copy(), "symmetric", 0.4, 10, seed=0))
    assert not np.array_equal(a, corrupt_labels(y, "symmetric", 0.4, 10, seed=1))
    np.testing.assert_array_equal(y, _labels(10, 100))
    assert a.dtype == np.int64 and a is not y


# ---------------------------------------------------------------- IDN (Xia et al. 2020)


def _idn_data(n=20000, C=10, seed=0):
    rng = np.random.default_rng(seed)
    return _labels(C, n // C, seed), rng.integers(0, 256, size=(n, 3, 4, 4)).astype(np.uint8)


def test_idn_probabilities():
    y, x = _idn_data(n=2000)
    P, q = _idn_probabilities(y, x, 0.4, 10, seed=0)
    assert P.shape == (2000, 10) and ((q >= 0) & (q <= 1)).all()
    np.testing.assert_array_equal(P[np.arange(y.size), y], 1 - q)  # p[y_i] = 1 - q_i exactly
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)
    assert (P >= 0).all()
    _, q = _idn_probabilities(*_idn_data(), 0.2, 10, seed=1)  # q ~ Normal(0.2, 0.1) truncated, not clipped
    assert (q > 0).all() and abs(q.mean() - _truncnorm_mean(0.2, 0.1)) < 4 * q.std() / math.sqrt(q.size)


@pytest.mark.parametrize("t", [0.2, 0.4])
def test_idn_realized_rate_and_determinism(t):
    y, x = _idn_data()
    before = x.copy()
    noisy = corrupt_labels(y, "instance", t, 10, seed=5, features=x)
    mean = _truncnorm_mean(t, 0.1)
    assert mean == pytest.approx(
        {0.2: 0.2055, 0.4: 0.4}[t], abs=1e-4
    )  # the truncated-normal mean (Xia et al. 2020)
    assert expected_rate("instance", t, 10) == pytest.approx(mean, abs=1e-12)
    assert abs(realized_rate(y, noisy) - mean) < 0.01
    np.testing.assert_array_equal(noisy, corrupt_labels(y, "instance", t, 10, seed=5, features=x))
    assert (noisy != corrupt_labels(y, "instance", t, 10, seed=6, features=x)).mean() > 0.05
    np.testing.assert_array_equal(x, before)


def test_idn_needs_features():
    y, x = _idn_data(n=100)
    with pytest.raises(ConfigError, match="features"):
        corrupt_labels(y, "instance", 0.2, 10, seed=0)
    with pytest.raises(ConfigError, match="features"):
        corrupt_labels(y, "instance", 0.2, 10, seed=0, features=x[:50])
    with pytest.raises(ConfigError, match="exact"):
        corrupt_labels(y, "instance", 0.2, 10, seed=0, features=x, count="exact")


# ---------------------------------------------------------------- parts: validation labels from the training process


@pytest.mark.parametrize("count", ["sampled", "exact"])
@pytest.mark.parametrize("kind", ["symmetric", "uniform", "random_flip", "flip2", "pairflip"])
def test_parts_share_the_transition_and_keep_part_zero(kind, count):
    t, C, seed = 0.4, 10, 5
    y0, y1 = _labels(C, 97, seed=1), _labels(C, 31, seed=2)  # odd sizes exercise exact rounding per part
    out = corrupt_labels(
        np.concatenate([y0, y1]), kind, t, C, seed=seed, count=count, parts=[y0.size, y1.size]
    )
    n0, n1 = out[: y0.size], out[y0.size :]
    np.testing.assert_array_equal(
        n0, corrupt_labels(y0, kind, t, C, seed=seed, count=count)
    )  # train unchanged
    Q = transition_matrix(kind, t, C, seed=seed)  # the one process (random_flip: the map of `seed`)
    assert (Q[y0, n0] > 0).all() and (Q[y1, n1] > 0).all()
    if kind == "random_flip":
        target = (Q - np.diag(np.diag(Q))).argmax(axis=1)
        assert (n1 != y1).sum() > 20 and (n1[n1 != y1] == target[y1[n1 != y1]]).all()
        old = transition_matrix(kind, t, C, seed=seed + 1)  # the former validation map (noise_seed + 1)
        assert not (old[y1[n1 != y1], n1[n1 != y1]] > 0).all()  # ...which these labels do not follow
    if count == "exact":
        w = _wrong_rates(kind, C, t, None)
        for y, n in ((y0, n0), (y1, n1)):  # exact counts within each part
            sizes = np.bincount(y, minlength=C)
            assert np.bincount(y[n != y], minlength=C).tolist() == [round(w[c] * sizes[c]) for c in range(C)]
    twice = corrupt_labels(np.concatenate([y0, y0]), kind, t, C, seed=seed, count=count, parts=[y0.size] * 2)
    assert not np.array_equal(twice[: y0.size], twice[y0.size :])  # own per-sample draws per part


def test_idn_parts_share_projection_and_flip_rate_law():
    y, x = _idn_data(n=4000)
    x = x / np.float32(255)
    n = y.size
    P, q = _idn_probabilities(np.concatenate([y, y]), np.concatenate([x, x]), 0.3, 10, seed=3, parts=[n, n])
    P1, q1 = _idn_probabilities(y, x, 0.3, 10, seed=3)
    np.testing.assert_array_equal(P[:n], P1)  # part 0 = a one-part call: training labels unchanged
    np.testing.assert_array_equal(q[:n], q1)

    def direction(P, q):  # the flip direction q_i·softmax(x_i W[y_i]) / q_i: a function of W only
        off = P.copy()
        off[np.arange(n), y] = 0.0
        return off / q[:, None]

    np.testing.assert_allclose(direction(P[n:], q[n:]), direction(P1, q1), rtol=1e-10, atol=1e-12)  # same W
    P_old, q_old = _idn_probabilities(y, x, 0.3, 10, seed=4)  # the former val process (noise_seed + 1)
    assert np.abs(direction(P_old, q_old) - direction(P1, q1)).max() > 0.5  # another W: the test can tell
    assert (q[n:] != q[:n]).mean() > 0.99  # own flip rates, from the same truncated Normal(τ, 0.1)
    assert abs(q[n:].mean() - _truncnorm_mean(0.3, 0.1)) < 4 * q[n:].std() / math.sqrt(n)
    y2 = np.concatenate([y, y])
    noisy = corrupt_labels(y2, "instance", 0.3, 10, seed=3, features=np.concatenate([x, x]), parts=[n, n])
    np.testing.assert_array_equal(noisy[:n], corrupt_labels(y, "instance", 0.3, 10, seed=3, features=x))
    assert abs(realized_rate(y, noisy[n:]) - _truncnorm_mean(0.3, 0.1)) < 0.03
    assert (noisy[n:] != noisy[:n]).any()


def test_bad_parts_are_config_errors():
    y = _labels(10, 5)
    for parts in ([20, 20], [60, -10], []):
        with pytest.raises(ConfigError, match="parts = "):
            corrupt_labels(y, "symmetric", 0.2, 10, seed=0, parts=parts)


def test_training_labels_are_pinned():
    """Labels of a one-part call (the noisy training set) as before validation shared the process."""
    import hashlib

    def sha(a: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(a, dtype="<i8").tobytes()).hexdigest()[:16]

    y = _labels(10, 97, seed=2)
    assert sha(corrupt_labels(y, "symmetric", 0.4, 10, seed=7)) == "c7fd14b657a293c7"
    assert sha(corrupt_labels(y, "random_flip", 0.4, 10, seed=7)) == "962a0ba22517afbf"
    assert sha(corrupt_labels(y, "random_flip", 0.4, 10, seed=7, count="exact")) == "507e496bf731e753"
    assert sha(corrupt_labels(y, "uniform", 0.4, 10, seed=7, count="exact")) == "a35b09dd530089bb"
    yi, x = _idn_data(n=2000)
    assert (
        sha(corrupt_labels(yi, "instance", 0.4, 10, seed=7, features=x / np.float32(255)))
        == "b6473cafba660133"
    )


# ---------------------------------------------------------------- noise.features: normalized


def test_normalized_features_standardize_per_feature():
    y, x = _idn_data(n=4000)
    x = x / np.float32(255)
    kw = dict(seed=2, features=x)
    raw = corrupt_labels(y, "instance", 0.4, 10, **kw)
    norm = corrupt_labels(y, "instance", 0.4, 10, normalize_features=True, **kw)
    assert (raw != norm).mean() > 0.05  # the option is used
    np.testing.assert_array_equal(norm, corrupt_labels(y, "instance", 0.4, 10, normalize_features=True, **kw))
    flat = x.reshape(y.size, -1).astype(np.float64)
    z = (flat - flat.mean(axis=0)) / flat.std(axis=0)  # zero mean / unit std per feature
    P, q = _idn_probabilities(y, x, 0.4, 10, seed=2, normalize_features=True)
    Pz, qz = _idn_probabilities(y, z, 0.4, 10, seed=2)
    np.testing.assert_array_equal(q, qz)
    np.testing.assert_allclose(P, Pz, rtol=1e-9, atol=1e-12)
    P_affine, _ = _idn_probabilities(
        y, x.astype(np.float64) * 7.0 + 3.0, 0.4, 10, seed=2, normalize_features=True
    )
    np.testing.assert_allclose(P_affine, P, rtol=1e-7, atol=1e-9)  # invariant to per-feature affine scale
    # a second part is standardized with part 0's statistics (one process): duplicates share the direction
    n = y.size
    P2, q2 = _idn_probabilities(np.concatenate([y, y]), np.concatenate([x, x]), 0.4, 10, seed=2, parts=[n, n],
                                normalize_features=True)  # fmt: skip
    np.testing.assert_array_equal(P2[:n], P)
    off = lambda P, q: np.where(np.eye(10, dtype=bool)[y], 0.0, P) / q[:, None]  # noqa: E731
    np.testing.assert_allclose(off(P2[n:], q2[n:]), off(P, q), rtol=1e-10, atol=1e-12)


def test_normalized_features_is_a_no_op_for_other_kinds():
    y = _labels(10, 50)
    for kind in ("symmetric", "random_flip"):
        spec = NoiseSpec(kind, 0.3, features="normalized").validate(10)
        np.testing.assert_array_equal(
            apply_noise(spec, y, 10, seed=1), apply_noise(NoiseSpec(kind, 0.3), y, 10, seed=1)
        )
        assert spec.tag == NoiseSpec(kind, 0.3).tag
    assert NoiseSpec("instance", 0.2, features="normalized").tag == "idn20_norm"
    with pytest.raises(ConfigError, match="noise.features = 'pca'"):
        NoiseSpec("instance", 0.2, features="pca").validate(10)


# ---------------------------------------------------------------- errors and NoiseSpec


@pytest.mark.parametrize(
    "kind,rate,C,match",
    [
        ("symmetric", 0.9, 10, "noise.rate = 0.9"),
        ("symmetric", 0.5, 2, "noise.rate = 0.5"),
        ("uniform", 1.0, 10, "noise.rate = 1.0"),
        ("pairflip", -0.1, 10, "noise.rate = -0.1"),
        ("symmetric", float("nan"), 10, "noise.rate = nan"),
        ("gaussian", 0.2, 10, "noise.kind = 'gaussian'"),
        ("asymmetric", 0.2, 10, "asymmetric"),
    ],
)
def test_bad_input_is_config_error(kind, rate, C, match):
    y = _labels(C, 20)
    with pytest.raises(ConfigError, match=match):
        corrupt_labels(y, kind, rate, C, seed=0)
    with pytest.raises(ValueError, match=match):  # ConfigError is a ValueError
        NoiseSpec(kind=kind, rate=rate).validate(C) if kind != "asymmetric" else transition_matrix(
            kind, rate, C
        )


def test_symmetric_identifiability_boundary_and_labels_range():
    corrupt_labels(_labels(10, 20), "symmetric", 0.89, 10, seed=0)
    with pytest.raises(ConfigError, match="label 10 out of range"):
        corrupt_labels(np.array([0, 10]), "symmetric", 0.2, 10, seed=0)


def test_spec_validate_tag_and_apply():
    assert NoiseSpec("symmetric", 0.4).tag == "sym40"
    assert NoiseSpec("instance", 0.2).tag == "idn20"
    assert NoiseSpec("uniform", 0.4, count="exact").tag == "unif40_exact"
    assert NoiseSpec().tag == "clean" and NoiseSpec("file", file="x.pt", file_key="worse_label").tag.endswith(
        "worse_label"
    )
    for spec, match in [
        (NoiseSpec("none", 0.4), "takes no rate"),
        (NoiseSpec("file"), "noise.file = None"),
        (NoiseSpec("symmetric", 0.2, count="most"), "noise.count = 'most'"),
        (NoiseSpec("instance", 0.2, count="exact"), "exact"),
        (NoiseSpec("instance", 0.2, idn_std=0), "idn_std = 0"),
    ]:
        with pytest.raises(ConfigError, match=match):
            spec.validate(10)
    y = _labels(10, 50)
    out = apply_noise(NoiseSpec("pairflip", 0.3, count="exact"), y, 10, seed=4)
    np.testing.assert_array_equal(out, corrupt_labels(y, "pairflip", 0.3, 10, seed=4, count="exact"))
    assert set(KINDS) == {"none", "symmetric", "uniform", "asymmetric", "pairflip", "random_flip", "flip2", "block5",
                          "instance", "file"}  # fmt: skip


# ---------------------------------------------------------------- label files


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def _cifar10n(n=200, seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 10, size=n)
    keys = ["aggre_label", "worse_label", "random_label1", "random_label2", "random_label3"]
    return clean, {"clean_label": clean, **{k: rng.integers(0, 10, size=n) for k in keys}}


def test_cal_pt_file(tmp_path, torch):
    """CAL / HOC instance-noise files (`IDN_0.6_C10_0.pt`): a dict of label tensors `noise_label_train`,
    `clean_label_train` (and test ones); `file_key: noise_label_train` reads the noisy labels."""
    rng = np.random.default_rng(0)
    clean, noisy = rng.integers(0, 10, size=200), rng.integers(0, 10, size=200)
    path = tmp_path / "IDN_0.6_C10_0.pt"
    torch.save({"noise_label_train": torch.as_tensor(noisy), "clean_label_train": torch.as_tensor(clean),
                "noise_label_test": torch.as_tensor(noisy[:50]), "clean_label_test": torch.as_tensor(clean[:50])},
               path)  # fmt: skip
    kw = dict(num_classes=10, expected_len=200, clean_labels=clean)
    np.testing.assert_array_equal(read_label_file(path, key="noise_label_train", **kw), noisy)
    with pytest.raises(ConfigError, match="noise.file_key = None: .*several label arrays.*noise_label_train"):
        read_label_file(path, **kw)
    with pytest.raises(ConfigError, match="noise.file = .*: 50 labels, shape \\(50,\\); expected 200"):
        read_label_file(path, key="noise_label_test", **kw)


def test_cifarn_pt_file(tmp_path, torch):
    clean, d = _cifar10n()
    path = tmp_path / "CIFAR-10_human.pt"
    torch.save(d, path)
    kw = dict(num_classes=10, expected_len=200, clean_labels=clean)
    np.testing.assert_array_equal(read_label_file(path, key="worse_label", **kw), d["worse_label"])
    np.testing.assert_array_equal(read_label_file(path, key="rand2", **kw), d["random_label2"])
    with pytest.raises(ConfigError, match="noise.file_key = None: .*several"):
        read_label_file(path, **kw)
    with pytest.raises(ConfigError, match="noise.file_key = 'best_label'"):
        read_label_file(path, key="best_label", **kw)
    wrong = clean.copy()
    wrong[:3] = (wrong[:3] + 1) % 10
    with pytest.raises(ConfigError, match="clean_label differs .* at 3 positions"):
        read_label_file(path, key="aggre_label", num_classes=10, expected_len=200, clean_labels=wrong)
    with pytest.raises(ConfigError, match="200 labels.*expected 201"):
        read_label_file(path, key="aggre_label", num_classes=10, expected_len=201)
    spec = NoiseSpec("file", file=str(path), file_key="worst")
    np.testing.assert_array_equal(apply_noise(spec, clean, 10, seed=0), d["worse_label"])
    # CIFAR-100N layout, tensors and numpy-1.x pickles (legacy format, `numpy.core` module names)
    legacy = tmp_path / "CIFAR-100_human.pt"
    torch.save({"clean_label": clean, "noisy_label": torch.as_tensor(d["aggre_label"])}, legacy,
               _use_new_zipfile_serialization=False)  # fmt: skip
    legacy.write_bytes(legacy.read_bytes().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    np.testing.assert_array_equal(read_label_file(legacy, **kw), d["aggre_label"])


def test_malicious_pickle_is_refused(tmp_path, torch):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"clean_label": np.zeros(4, dtype=np.int64), "noisy_label": Payload()}, path)
    assert b"system" in path.read_bytes() or b"posix" in path.read_bytes()
    with pytest.raises(ConfigError, match="never arbitrary pickles"):
        read_label_file(path, num_classes=10, expected_len=4)
    assert not marker.exists()


def test_npy_and_csv_files(tmp_path):
    labels = np.random.default_rng(0).integers(0, 5, size=30)
    np.save(tmp_path / "l.npy", labels)
    kw = dict(num_classes=5, expected_len=30)
    np.testing.assert_array_equal(read_label_file(tmp_path / "l.npy", **kw), labels)
    np.save(tmp_path / "obj.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="obj.npy"):
        read_label_file(tmp_path / "obj.npy", **kw)
    (tmp_path / "plain.csv").write_text("\n".join(map(str, labels)) + "\n")
    np.testing.assert_array_equal(read_label_file(tmp_path / "plain.csv", **kw), labels)
    order = np.random.default_rng(1).permutation(30)
    rows = "".join(f"{i},{labels[i]}\n" for i in order)
    (tmp_path / "idx.csv").write_text("index,label\n" + rows)
    np.testing.assert_array_equal(read_label_file(tmp_path / "idx.csv", **kw), labels)
    (tmp_path / "gap.csv").write_text("index,label\n" + "".join(f"{i},{labels[i]}\n" for i in range(1, 30)))
    with pytest.raises(ConfigError, match="each of 0..29 once"):
        read_label_file(tmp_path / "gap.csv", **kw)


def test_bad_label_files(tmp_path):
    np.save(tmp_path / "short.npy", np.zeros(29, dtype=np.int64))
    np.save(tmp_path / "range.npy", np.array([0, 1, 7] + [0] * 27))
    kw = dict(num_classes=5, expected_len=30)
    with pytest.raises(ConfigError, match="short.npy: 29 labels.*expected 30"):
        read_label_file(tmp_path / "short.npy", **kw)
    with pytest.raises(ConfigError, match="range.npy: label 7 out of range; allowed are 0..4"):
        read_label_file(tmp_path / "range.npy", **kw)
    with pytest.raises(ConfigError, match="file not found"):
        read_label_file(tmp_path / "missing.pt", **kw)
    (tmp_path / "l.json").write_text("[]")
    with pytest.raises(ConfigError, match="'.json'"):
        read_label_file(tmp_path / "l.json", **kw)
