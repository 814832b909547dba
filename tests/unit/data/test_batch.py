"""The typed training batch (lnl.data.batch) and the noise-kind registry (lnl.data.noise_kinds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lnl.data.batch import Batch, DataRequirements, Stream, as_batch, synthetic_batch, view_keys
from lnl.data.noise import NoiseSpec, apply_noise, transition_matrix
from lnl.data.noise_kinds import NOISE_KINDS, NoiseKind, register_noise_kind
from lnl.errors import ConfigError


def test_a_repeated_view_is_numbered_and_an_unknown_key_refused() -> None:
    assert view_keys(("weak", "strong")) == ("weak", "strong")
    assert view_keys(("strong", "strong")) == ("strong", "strong2")
    with pytest.raises(ConfigError, match="strong3"):
        view_keys(("strong", "strong", "strong"))


def test_a_dict_batch_becomes_typed_streams_with_the_host_flag() -> None:
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])
    batch = as_batch({"noisy": {"x": {"weak": x, "strong": -x}, "y": y, "y_true": torch.tensor([-1, -1, 0, -1])},
                      "clean": {"x": x, "y": y}})  # fmt: skip
    assert (
        batch.noisy.has_true and torch.equal(batch.noisy.x, x) and torch.equal(batch.noisy.views.strong, -x)
    )
    assert not batch.clean.has_true and batch.clean.views.weak is x and batch.clean.views.strong is None
    unknown = as_batch({"noisy": {"x": x, "y": y, "y_true": torch.full((4,), -1)}})
    assert not unknown.noisy.has_true and unknown.clean is None and as_batch(unknown) is unknown


def test_the_synthetic_batch_follows_the_requirements_and_its_seed() -> None:
    req = DataRequirements(needs_clean=True, train_views=("strong", "strong"), clean_augment="autoaugment")
    a = synthetic_batch(req, batch_size=6, clean_batch_size=3, seed=1, position=2)
    b = synthetic_batch(req, batch_size=6, clean_batch_size=3, seed=1, position=2)
    assert isinstance(a, Batch) and isinstance(a.noisy, Stream)
    assert a.noisy.views.weak is None and a.noisy.views.strong2.shape == (6, 3, 8, 8)
    assert not torch.equal(a.noisy.views.strong, a.noisy.views.strong2)
    assert a.clean.views.autoaugment.shape == (3, 3, 8, 8) and a.noisy.index.tolist() == list(range(12, 18))
    for s, t in zip(a.noisy.views, b.noisy.views):
        assert (s is None and t is None) or torch.equal(s, t)
    one = synthetic_batch(DataRequirements(), batch_size=6, clean_batch_size=3, seed=1)
    assert one.clean is None and torch.equal(one.noisy.x, a.noisy.views.strong)  # further views drawn last


def test_a_registered_kind_is_drawn_without_touching_the_generators() -> None:
    """A new class-conditional kind is one registration: its matrix drives `sampled` and `exact` draws."""
    swap = NoiseKind(
        "swap01", "swap", lambda t, C, s, m: np.eye(C)[[1, 0, *range(2, C)]] * t + np.eye(C) * (1 - t)
    )
    register_noise_kind(swap)
    try:
        q = transition_matrix("swap01", 0.5, 3)
        np.testing.assert_allclose(q, [[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]])
        labels = np.repeat(np.arange(3), 100)
        noisy = apply_noise(NoiseSpec("swap01", 0.5, count="exact"), labels, 3, seed=0)
        assert (noisy[labels == 2] == 2).all() and (noisy[labels == 0] != 0).sum() == 50
        assert NoiseSpec("swap01", 0.3).tag == "swap30"
    finally:
        del NOISE_KINDS["swap01"]
    with pytest.raises(ConfigError, match="allowed are none, symmetric"):
        NoiseSpec("swap01", 0.3).validate(3)
