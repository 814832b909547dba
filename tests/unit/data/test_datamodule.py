"""NoisyLabelDataModule: batch format, paired streams, disjoint parts, sharding, and y_true never trained on."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from lnl.data.datamodule import DataRequirements, NoisyLabelDataModule
from lnl.data.loading import EpochSampler
from lnl.data.longtail import longtail_counts
from lnl.data.noise import NoiseSpec, transition_matrix
from lnl.methods.ce import CE
from lnl.tools.fakedata import write_cifar10, write_clothing1m


def digits(**kwargs) -> NoisyLabelDataModule:
    defaults = {
        "noise": NoiseSpec("symmetric", 0.4),
        "val_per_class": 5,
        "clean_per_class": 3,
        "batch_size": 32,
    }
    dm = NoisyLabelDataModule("digits", **(defaults | kwargs))
    return dm


def test_parts_are_disjoint_stratified_and_noise_only_on_noisy_part() -> None:
    dm = digits()
    dm.setup("fit")
    assert (
        len(np.intersect1d(dm.noisy_index, dm.clean_index)) == 0
        and len(np.intersect1d(dm.noisy_index, dm.val_index)) == 0
    )
    assert np.bincount(dm.true_labels[dm.clean_index], minlength=10).tolist() == [3] * 10
    assert np.bincount(dm.true_labels[dm.val_index], minlength=10).tolist() == [5] * 10
    assert (dm.given_labels[dm.clean_index] == dm.true_labels[dm.clean_index]).all()
    assert (dm.given_labels[dm.val_index] == dm.true_labels[dm.val_index]).all()  # val_labels: clean
    assert abs(dm.realized_rate - 0.4) < 0.05
    assert len(dm.noisy_index) + 80 == dm.train_size


def test_two_view_noisy_batches_and_a_paired_clean_stream() -> None:
    dm = digits()
    dm.requirements = DataRequirements(needs_clean=True, train_views=("weak", "strong"))
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = list(iter(loader))
    assert len(batches) == len(dm.noisy_index) // 32
    batch = batches[0][0] if isinstance(batches[0], tuple) else batches[0]
    noisy, clean = batch["noisy"], batch["clean"]
    assert noisy.y_true is not None and {k for k, v in noisy.views._asdict().items() if v is not None} == {
        "weak", "strong"}  # fmt: skip
    assert noisy.views.weak.shape == (32, 1, 8, 8) and not torch.equal(noisy.views.weak, noisy.views.strong)
    assert clean.y_true is None and clean.x.shape == (32, 1, 8, 8)
    assert set(clean.index.tolist()) <= set(dm.clean_index.tolist())
    assert set(noisy.index.tolist()) <= set(dm.noisy_index.tolist())
    torch.testing.assert_close(noisy.y, torch.as_tensor(dm.given_labels[noisy.index.numpy()]))


def test_only_the_training_streams_keep_their_workers_across_epochs() -> None:
    dm = digits(num_workers=2)
    dm.requirements = DataRequirements(needs_clean=True)
    dm.setup("fit")
    train = dm.train_dataloader().iterables
    assert train["noisy"].persistent_workers and train["clean"].persistent_workers
    assert not dm.val_dataloader().persistent_workers and not dm.test_dataloader().persistent_workers
    assert not dm.report_dataloader(64).persistent_workers


def test_a_repeated_view_gets_its_own_key_and_its_own_draw() -> None:
    dm = digits(train_on="both")
    dm.requirements = DataRequirements(train_views=("strong", "strong"))
    dm.setup("fit")
    batch = {"noisy": next(iter(dm.train_dataloader()["noisy"]))}
    x = batch["noisy"].views
    assert {k for k, v in x._asdict().items() if v is not None} == {"strong", "strong2"}
    assert not torch.equal(x.strong, x.strong2)
    assert set(batch["noisy"].index.tolist()) & set(dm.clean_index.tolist())  # train_on: both
    flagged = dm.on_before_batch_transfer(batch, 0)
    assert flagged.noisy.has_true is True


def test_sampler_shards_are_a_partition_of_the_single_process_order() -> None:
    ids = np.arange(100, 164)
    single = [i for _, i in EpochSampler(ids, seed=3)]
    shards = [[i for _, i in EpochSampler(ids, seed=3, rank=r, world_size=2)] for r in range(2)]
    assert sorted(single) == ids.tolist()
    for k in range(0, 64, 8):  # batch k of 8 on one process = batches k of 4 on each of 2 ranks
        assert sorted(single[k : k + 8]) == sorted(
            shards[0][k // 2 : k // 2 + 4] + shards[1][k // 2 : k // 2 + 4]
        )
    sampler = EpochSampler(ids, seed=3)
    sampler.set_epoch(1)
    assert [i for _, i in sampler] != single


def test_augmentations_depend_on_seed_epoch_and_index_not_on_call_order() -> None:
    dm = digits()
    dm.requirements = DataRequirements(train_views=("weak", "strong"))
    dm.setup("fit")
    dataset = dm.train_dataloader()["noisy"].dataset
    i = int(dm.noisy_index[0])
    first = dataset[(0, i)]["x"]["strong"]
    dataset[(0, int(dm.noisy_index[1]))]
    torch.manual_seed(123)
    assert torch.equal(dataset[(0, i)]["x"]["strong"], first)
    ids = [int(j) for j in dm.noisy_index[:20]]
    changed = [not torch.equal(dataset[(1, j)]["x"]["strong"], dataset[(0, j)]["x"]["strong"]) for j in ids]
    assert sum(changed) >= 15  # a new epoch draws new augmentations


def _train_ce(dm: NoisyLabelDataModule, tmp_path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = CE(num_classes=10, backbone="tiny_cnn", in_chans=1, optimizer=partial(torch.optim.SGD, lr=0.1))
    trainer = Trainer(max_epochs=1, limit_train_batches=5, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_never_reads_true_labels(tmp_path: Path) -> None:
    reference = _train_ce(digits(), tmp_path)
    shuffled = digits()
    shuffled.setup("fit")
    shuffled.true_labels = np.random.default_rng(0).permutation(shuffled.true_labels)
    params = _train_ce(shuffled, tmp_path)
    for key, value in reference.items():
        torch.testing.assert_close(params[key], value, rtol=0, atol=0)


def test_checkpointed_labels_must_match_on_resume() -> None:
    dm = digits()
    dm.setup("fit")
    state = dm.state_dict()
    other = digits(noise_seed=1)
    other.setup("fit")
    with pytest.raises(ValueError, match="labels sha256"):
        other.load_state_dict(state)
    dm.load_state_dict(state)  # same config: accepted


def _flips(dm: NoisyLabelDataModule, ids: np.ndarray) -> np.ndarray:
    """Counts of true -> given label changes [C, C] (diagonal zero) over `ids`."""
    T = np.zeros((10, 10))
    np.add.at(T, (dm.true_labels[ids], dm.given_labels[ids]), 1)
    np.fill_diagonal(T, 0)
    return T


@pytest.mark.parametrize(
    "spec", [NoiseSpec("symmetric", 0.4, count="exact"), NoiseSpec("random_flip", 0.4), NoiseSpec("instance", 0.4)],
    ids=lambda s: s.tag,
)  # fmt: skip
def test_noisy_val_labels_come_from_the_training_noise_process(spec: NoiseSpec) -> None:
    dm = digits(noise=spec, val_labels="noisy", val_per_class=30, noise_seed=0)
    ref = digits(noise=spec, val_labels="clean", val_per_class=30, noise_seed=0)
    np.testing.assert_array_equal(dm.val_index, ref.val_index)
    np.testing.assert_array_equal(
        dm.given_labels[dm.noisy_index], ref.given_labels[ref.noisy_index]
    )  # unchanged
    train, val = _flips(dm, dm.noisy_index), _flips(dm, dm.val_index)
    assert abs(val.sum() / len(dm.val_index) - 0.4) < 0.1  # val is noisy, at the training rate
    if spec.kind == "symmetric":  # exact counts within val too
        assert val.sum(axis=1).tolist() == [12] * 10
    if spec.kind == "random_flip":  # every flip, train and val, goes to the one class map of noise_seed
        Q = transition_matrix("random_flip", 0.4, 10, seed=0)
        allowed = (Q - np.diag(np.diag(Q))) > 0
        assert (allowed | (train == 0)).all() and (allowed | (val == 0)).all() and (val.sum(axis=1) > 0).all()
    if (
        spec.kind == "instance"
    ):  # same W: per-class flip directions agree (old noise_seed + 1 val: TV ≈ 0.7-0.9)
        tv = 0.5 * np.abs(train / train.sum(1, keepdims=True) - val / val.sum(1, keepdims=True)).sum(1)
        assert tv.mean() < 0.4


@pytest.mark.parametrize("kind", ["random_flip", "instance"])
def test_noisy_val_labels_are_deterministic(kind: str) -> None:
    a, b = (digits(noise=NoiseSpec(kind, 0.4), val_labels="noisy") for _ in range(2))
    np.testing.assert_array_equal(a.given_labels, b.given_labels)
    assert a.labels_sha256 == b.labels_sha256
    c = digits(noise=NoiseSpec(kind, 0.4), val_labels="noisy", noise_seed=1)
    assert (c.given_labels[c.val_index] != a.given_labels[a.val_index]).any()


def test_normalized_idn_features_change_the_labels() -> None:
    raw = digits(noise=NoiseSpec("instance", 0.4), val_labels="noisy")
    norm = digits(noise=NoiseSpec("instance", 0.4, features="normalized"), val_labels="noisy")
    again = digits(noise=NoiseSpec("instance", 0.4, features="normalized"), val_labels="noisy")
    ids = norm.noisy_index
    assert (norm.given_labels[ids] != raw.given_labels[ids]).mean() > 0.05
    assert norm.labels_sha256 != raw.labels_sha256 and norm.labels_sha256 == again.labels_sha256
    assert abs(norm.realized_rate - 0.4) < 0.05


def test_cifar_long_tail_and_asymmetric_noise_from_real_format_files(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n_train_per_class=60, n_test_per_class=2)
    dm = NoisyLabelDataModule("cifar10", root=str(tmp_path), noise=NoiseSpec("asymmetric", 0.4, count="exact"),
                              longtail_ratio=10, val_per_class=2)  # fmt: skip
    dm.setup("fit")
    used = np.concatenate([dm.noisy_index, dm.val_index])
    assert np.bincount(dm.true_labels[used], minlength=10).tolist() == longtail_counts(60, 10, 10)
    flipped = dm.noisy_index[dm.given_labels[dm.noisy_index] != dm.true_labels[dm.noisy_index]]
    pairs = set(zip(dm.true_labels[flipped].tolist(), dm.given_labels[flipped].tolist()))
    assert pairs <= {(9, 1), (2, 0), (4, 7), (3, 5), (5, 3)}


def test_clothing1m_uses_its_predefined_parts(tmp_path: Path) -> None:
    write_clothing1m(tmp_path, n_noisy=28, n_clean=14, n_val=14, n_test=14)
    dm = NoisyLabelDataModule("clothing1m", root=str(tmp_path), source_kwargs={"strict_sizes": False, "image_size": 32},
                              samples_per_epoch=14, batch_size=7)  # fmt: skip
    dm.requirements = DataRequirements(needs_clean=True)
    dm.setup("fit")
    assert (len(dm.noisy_index), len(dm.clean_index), len(dm.val_index)) == (28, 14, 14)
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    batch = batch[0] if isinstance(batch, tuple) else batch
    assert batch["noisy"].x.shape == (7, 3, 32, 32)
    assert len(loader) == 2  # 14 class-balanced samples per epoch, batch 7


def test_clothing1m_noisy_validation_holds_out_part_of_the_noisy_list(tmp_path: Path) -> None:
    write_clothing1m(tmp_path, n_noisy=56, n_clean=14, n_val=14, n_test=14)
    kwargs = {"source_kwargs": {"strict_sizes": False, "image_size": 32}, "val_labels": "noisy"}
    dm = NoisyLabelDataModule("clothing1m", root=str(tmp_path), val_per_class=1, **kwargs)
    assert len(dm.val_index) + len(dm.noisy_index) == 56 and dm.val_index.max() < 56  # drawn from noisy_train
    assert np.bincount(dm.given_labels[dm.val_index]).max() == 1
    with pytest.raises(ValueError, match="val_per_class = 0"):
        NoisyLabelDataModule("clothing1m", root=str(tmp_path), **kwargs)


def test_train_on_clean_trains_on_the_clean_set_alone() -> None:
    """`train_on: clean` (README): the training stream of a single-stream method is exactly the clean set, every
    clean image once per epoch, with its clean labels."""
    dm = digits(train_on="clean", clean_per_class=10, batch_size=25)  # full batches: no image dropped
    dm.setup("fit")
    seen, labels = [], []
    for batch in dm.train_dataloader()["noisy"]:
        seen += batch.index.tolist()
        labels.append(batch.y == batch.y_true)
    assert sorted(seen) == sorted(dm.clean_index.tolist()) and len(seen) == 100
    assert torch.cat(labels).all()
