"""The train streams shard over 4 simulated ranks as the data module builds them for each rank: every noisy index
exactly once per epoch (duplicates only to pad to a multiple of the world size), clean passes disjoint across
ranks, a new order each epoch, and Clothing1M's per-epoch class-balanced subsample identical on every rank."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lnl.data.datamodule import DataRequirements, NoisyLabelDataModule
from lnl.data.loading import EpochSampler
from lnl.data.noise import NoiseSpec
from lnl.tools.fakedata import write_cifar10, write_clothing1m

WORLD = 4


def rank_samplers(dm: NoisyLabelDataModule, epoch: int) -> list[dict[str, EpochSampler]]:
    """Each rank's train samplers (`noisy`, and `clean` when the method needs it), set to `epoch` as Lightning does."""
    out = []
    for rank in range(WORLD):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=WORLD)  # what `_dist` reads
        loaders = dm.train_dataloader()
        loaders = getattr(loaders, "iterables", loaders)  # CombinedLoader -> its dict of loaders
        samplers = {name: loader.sampler for name, loader in loaders.items()}
        for sampler in samplers.values():
            sampler.set_epoch(epoch)
        out.append(samplers)
    dm.trainer = None
    return out


def drawn(samplers: list[dict[str, EpochSampler]], stream: str, epoch: int) -> list[list[int]]:
    pairs = [list(s[stream]) for s in samplers]
    assert all(e == epoch for shard in pairs for e, _ in shard)
    return [[i for _, i in shard] for shard in pairs]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar10"), n_train_per_class=20, n_test_per_class=1).parent


def test_noisy_and_clean_streams_partition_over_four_ranks(cifar_root: Path) -> None:
    dm = NoisyLabelDataModule("cifar10", root=str(cifar_root), noise=NoiseSpec("symmetric", 0.4),
                              clean_per_class=3, val_per_class=1, batch_size=8, clean_batch_size=4)  # fmt: skip
    dm.requirements = DataRequirements(needs_clean=True)
    assert len(dm.noisy_index) == 160 and len(dm.clean_index) == 30  # 160 = 4 x 40: no padding
    orders = []
    for epoch in (0, 1):
        samplers = rank_samplers(dm, epoch)
        noisy = drawn(samplers, "noisy", epoch)
        assert [len(s) for s in noisy] == [40] * WORLD
        assert sorted(i for s in noisy for i in s) == sorted(dm.noisy_index.tolist())  # each exactly once
        orders.append(noisy)
        # clean: 5 noisy batches per rank -> 5 x 4 clean samples per rank = 80 of a stream of successive
        # permutations of the 30 clean indices; rank r holds stream positions r, r + 4, ...: within each pass
        # the ranks' draws are disjoint, and a full pass covers the clean set exactly once
        clean = drawn(samplers, "clean", epoch)
        assert [len(s) for s in clean] == [20] * WORLD
        stream = [clean[p % WORLD][p // WORLD] for p in range(WORLD * 20)]
        n = len(dm.clean_index)
        for start in range(0, len(stream), n):
            part = stream[start : start + n]
            assert len(set(part)) == len(part)
            if len(part) == n:
                assert sorted(part) == sorted(dm.clean_index.tolist())
    assert all(a != b for a, b in zip(*orders))  # every rank gets a new order in epoch 1


def test_padding_duplicates_only_up_to_a_multiple_of_the_world_size() -> None:
    dm = NoisyLabelDataModule("digits", noise=NoiseSpec("symmetric", 0.4), val_per_class=5, batch_size=32)
    n = len(dm.noisy_index)  # 1387: not a multiple of 4
    per_rank = -(-n // WORLD)
    padding = per_rank * WORLD - n
    assert padding > 0
    for epoch in (0, 1):
        shards = drawn(rank_samplers(dm, epoch), "noisy", epoch)
        assert [len(s) for s in shards] == [per_rank] * WORLD  # equal shards: no rank waits at a collective
        counts = Counter(i for s in shards for i in s)
        assert set(counts) == set(dm.noisy_index.tolist())  # nothing lost
        assert sorted(counts.values(), reverse=True)[:padding] == [2] * padding  # `padding` seen twice ...
        assert sum(counts.values()) == n + padding  # ... and every other index exactly once


def test_clothing1m_balanced_subsample_is_identical_on_every_rank(tmp_path: Path) -> None:
    write_clothing1m(tmp_path, n_noisy=140, n_clean=14, n_val=14, n_test=14)
    dm = NoisyLabelDataModule("clothing1m", root=str(tmp_path), samples_per_epoch=28, batch_size=7,
                              source_kwargs={"strict_sizes": False, "image_size": 32})  # fmt: skip
    subsamples = []
    for epoch in (0, 1):
        samplers = rank_samplers(dm, epoch)
        subsample = samplers[0]["noisy"].per_epoch(epoch)
        assert all(np.array_equal(s["noisy"].per_epoch(epoch), subsample) for s in samplers)
        shards = drawn(samplers, "noisy", epoch)
        assert [len(s) for s in shards] == [7] * WORLD
        assert sorted(i for s in shards for i in s) == sorted(subsample.tolist())  # each exactly once
        subsamples.append(set(subsample.tolist()))
    assert subsamples[0] != subsamples[1]  # a new class-balanced subsample each epoch
