"""Sources read tiny files written in the datasets' real on-disk formats."""

from __future__ import annotations

import pickle
import re
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lnl.data import file_sources, sources
from lnl.data.noise import cifar10_asymmetric_map, read_label_file
from lnl.data.sources import ImageSet, clothing_balanced_subsample, create_source
from lnl.errors import ConfigError
from lnl.tools.fakedata import (
    CIFAR10_CLASSES,
    CIFAR100_COARSE_OF_FINE,
    write_cifar10,
    write_cifar100,
    write_cifar_n,
    write_clothing1m,
    write_folder_csv,
)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_train_per_class=3, n_test_per_class=2)
    write_cifar100(root, n_train_per_class=1, n_test_per_class=1)
    return root


def _unpickle_bytes(path):  # the CIFAR website's reader: bytes keys
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def test_cifar10_through_torchvision_matches_the_pickles(cifar_root):
    src = create_source("cifar10", cifar_root)
    tr, te = src.train(), src.test()
    batches = [_unpickle_bytes(cifar_root / "cifar-10-batches-py" / f"data_batch_{i}") for i in range(1, 6)]
    rows = np.concatenate([b[b"data"] for b in batches])
    assert np.array_equal(tr.labels, np.concatenate([b[b"labels"] for b in batches]))
    assert np.array_equal(tr.true_labels, tr.labels) and tr.labels.dtype == np.int64
    assert tr.images.shape == (30, 32, 32, 3) and tr.images.dtype == np.uint8 and len(te) == 20
    # CIFAR rows are CHW planes, the order of IDN's raw features
    assert np.array_equal(np.rint(tr.raw_features() * 255), rows) and tr.raw_features().max() <= 1.0
    assert np.array_equal(np.asarray(tr.image(4)), rows[4].reshape(3, 32, 32).transpose(1, 2, 0))
    assert tr.image(0).mode == "RGB" and tr.raw_features([2, 5]).shape == (2, 3072)
    assert src.class_names == CIFAR10_CLASSES and src.family == "cifar" and src.num_classes == 10
    assert np.array_equal(src.asymmetric_map(), cifar10_asymmetric_map()) and src.predefined_parts() is None
    # files present: download=True goes through torchvision's download(), which finds them and fetches nothing
    again = create_source("cifar10", cifar_root, download=True)
    assert np.array_equal(again.train().images, tr.images)


def test_cifar100_superclasses_from_the_pickle(cifar_root):
    src = create_source("cifar100", cifar_root)
    tr = src.train()
    assert len(tr) == 100 and len(src.test()) == 100 and src.class_names[:2] == ["apple", "aquarium_fish"]
    assert np.array_equal(src.coarse_labels(), CIFAR100_COARSE_OF_FINE)
    amap = src.asymmetric_map()
    assert np.all(amap != np.arange(100)) and np.array_equal(np.sort(amap), np.arange(100))
    assert np.array_equal(CIFAR100_COARSE_OF_FINE[amap], CIFAR100_COARSE_OF_FINE)  # within the super-class


def test_cifar_with_the_genuine_count_is_md5_verified(cifar_root, monkeypatch):
    monkeypatch.setattr(sources.CIFAR10Source, "_genuine_sizes", {True: 30, False: 20})  # pretend genuine
    with pytest.raises(ConfigError, match="data_batch_1 fails its md5 checksum"):
        create_source("cifar10", cifar_root).train()


def test_cifar_missing_root_or_files_without_download(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"data root = {tmp_path / 'nope'}: directory not found")):
        create_source("cifar10", tmp_path / "nope")
    with pytest.raises(ConfigError, match="cifar-100-python/train not found .*download: true"):
        create_source("cifar100", tmp_path)


def test_cifar_n_files_load_safely(tmp_path):
    clean = np.arange(200) % 10
    path = write_cifar_n(tmp_path / "CIFAR-10_human.pt", clean, noise_rate=0.4, seed=1)
    with pytest.raises(pickle.UnpicklingError):  # numpy pickles are refused without an allow-list
        torch.load(path, weights_only=True)
    obj = torch.load(path, weights_only=False)  # our own file: inspect the ground truth
    assert set(obj) == {
        "clean_label",
        "worse_label",
        "aggre_label",
        "random_label1",
        "random_label2",
        "random_label3",
    }
    worse_wrong = obj["worse_label"] != clean
    assert worse_wrong.sum() == 80 and (obj["aggre_label"] != clean).sum() == 20
    assert np.all(worse_wrong[obj["random_label2"] != clean])  # an annotator's error is a "worse" error
    worst = read_label_file(path, key="worse_label", num_classes=10, expected_len=200, clean_labels=clean)
    assert np.array_equal(worst, obj["worse_label"])
    clean100 = np.arange(300) % 100
    p100 = write_cifar_n(tmp_path / "CIFAR-100_human.pt", clean100, noise_rate=0.4, kind="cifar100")
    noisy = read_label_file(p100, num_classes=100, expected_len=300, clean_labels=clean100)
    assert (noisy != clean100).sum() == 120


@pytest.fixture
def clothing(tmp_path):
    return write_clothing1m(tmp_path / "c1m", n_noisy=20, n_clean=8, n_val=6, n_test=6, image_size=24)


def _kv(path):
    return {k: int(v) for k, v in (ln.split() for ln in path.read_text().splitlines())}


def test_clothing1m_parts_labels_and_size_warning(clothing):
    with pytest.warns(UserWarning, match="noisy_train 20 \\(expected 1,000,000\\)"):
        src = create_source("clothing1m", clothing, strict_sizes=False, image_size=32)
    parts = src.predefined_parts()
    noisy, clean_kv, noisy_kv = (
        parts["noisy"],
        _kv(clothing / "clean_label_kv.txt"),
        _kv(clothing / "noisy_label_kv.txt"),
    )
    keys = (clothing / "noisy_train_key_list.txt").read_text().split()
    assert [len(parts[k]) for k in ("noisy", "clean", "val")] == [20, 8, 6] and len(src.test()) == 6
    assert src.image_size == 32 and src.family == "clothing" and len(src.class_names) == src.num_classes == 14
    assert noisy.labels.tolist() == [noisy_kv[k] for k in keys] and src.train() is noisy
    assert (
        noisy.true_labels.tolist() == [clean_kv.get(k, -1) for k in keys]
        and (noisy.true_labels >= 0).sum() == 4
    )
    assert np.array_equal(parts["val"].true_labels, parts["val"].labels)
    img = parts["clean"].image(0)
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (24, 24)
    with pytest.raises(ConfigError, match="noise.features = raw"):
        noisy.raw_features()


@pytest.mark.filterwarnings("error")
def test_clothing1m_strict_sizes_and_annotations_folder(tmp_path, monkeypatch):
    root = write_clothing1m(tmp_path, n_noisy=6, n_clean=4, n_val=2, n_test=2, n_overlap=1, annotations=True)
    with pytest.raises(ConfigError, match="list sizes differ .*strict_sizes: false"):
        create_source("clothing1m", root)
    tiny = {"noisy_train": 6, "clean_train": 4, "clean_val": 2, "clean_test": 2}
    monkeypatch.setattr(file_sources, "CLOTHING1M_SIZES", tiny)
    # release-sized lists: no warning (warnings are errors in this test)
    assert len(create_source("clothing1m", root).predefined_parts()["clean"]) == 4
    with pytest.raises(ConfigError, match="cannot be downloaded"):
        create_source("clothing1m", root, download=True)
    shutil.rmtree(root / "annotations")
    with pytest.raises(ConfigError, match="noisy_train_key_list.txt not found"):
        create_source("clothing1m", root)


@pytest.mark.filterwarnings("ignore:clothing1m list sizes")
def test_clothing1m_missing_images_and_labels_fail_early(clothing):
    keys = (clothing / "clean_val_key_list.txt").read_text().split()
    (clothing / keys[1]).unlink()
    (clothing / keys[3]).unlink()
    with pytest.raises(ConfigError, match=f"2 of 40 listed images are missing .*first: {keys[1]}"):
        create_source("clothing1m", clothing, strict_sizes=False)
    kv, first = (
        clothing / "noisy_label_kv.txt",
        (clothing / "noisy_train_key_list.txt").read_text().split()[0],
    )
    kv.write_text("".join(ln + "\n" for ln in kv.read_text().splitlines() if not ln.startswith(first + " ")))
    with pytest.raises(ConfigError, match="1 keys have no label in noisy_label_kv.txt"):
        create_source("clothing1m", clothing, strict_sizes=False)


def test_clothing_balanced_subsample_is_balanced_and_epoch_seeded():
    labels = np.repeat(np.arange(4), [50, 40, 30, 5])
    idx = clothing_balanced_subsample(labels, 60, seed=3, epoch=0)
    assert np.array_equal(np.bincount(labels[idx]), [15, 15, 15, 5]) and len(np.unique(idx)) == len(idx)
    assert np.array_equal(idx, clothing_balanced_subsample(labels, 60, seed=3, epoch=0))  # same on every rank
    assert not np.array_equal(idx, clothing_balanced_subsample(labels, 60, seed=3, epoch=1))
    with pytest.raises(ConfigError, match="samples_per_epoch = 0"):
        clothing_balanced_subsample(labels, 0, seed=3, epoch=0)


def test_digits_embedded_split():
    src = create_source("digits", None)
    tr, te = src.train(), src.test()
    assert (
        (len(tr), len(te)) == (1437, 360) and tr.images.shape[1:] == (8, 8, 1) and tr.images.dtype == np.uint8
    )
    assert tr.images.max() == 255 and tr.images.min() == 0 and src.in_chans == 1 and src.family == "digits"
    assert np.bincount(te.labels).min() >= 35 and np.bincount(te.labels).max() <= 37  # stratified
    assert np.array_equal(create_source("digits").test().labels, te.labels)  # fixed split
    assert tr.image(0).mode == "L" and tr.image(0).size == (8, 8) and tr.raw_features([0, 1]).shape == (2, 64)
    assert src.asymmetric_map() is None and len(src.mean) == len(src.std) == 1


def test_folder_csv_parts_and_true_labels(tmp_path):
    root = write_folder_csv(tmp_path, n=24, num_classes=3, n_clean=6, n_val=6, n_test=6)
    src = create_source("folder_csv", root, clean_csv="clean.csv", val_csv="val.csv", test_csv="test.csv")
    tr, parts = src.train(), src.predefined_parts()
    clean_rows = dict(ln.split(",") for ln in (root / "clean.csv").read_text().splitlines()[1:])
    assert len(tr) == 26 and src.num_classes == 3 and [len(parts[k]) for k in ("clean", "val")] == [6, 6]
    assert tr.true_labels[:24].tolist() == [-1] * 24
    assert tr.true_labels[24:].tolist() == [int(v) for v in list(clean_rows.values())[:2]]
    assert np.all(tr.true_labels[24:] != tr.labels[24:]) and parts["noisy"] is tr
    assert src.test().image(0).size == (16, 16) and src.image_size == 224
    no_val = create_source("folder_csv", root, num_classes=5)
    assert no_val.predefined_parts() is None and no_val.num_classes == 5
    assert len(no_val.test()) == 0  # test_csv is optional: no test set, no test accuracy
    with pytest.raises(ConfigError, match="val_csv = None: a clean_csv"):
        create_source("folder_csv", root, clean_csv="clean.csv")


def test_folder_csv_bad_inputs(tmp_path):
    root = write_folder_csv(tmp_path, n=8, num_classes=3, n_clean=0, n_val=0, n_test=0)
    with pytest.raises(
        ConfigError, match="train.csv \\(num_classes = 2\\) line \\d+: label 2 out of range; allowed"
    ):
        create_source("folder_csv", root, num_classes=2)
    (root / "bad.csv").write_text("path,label\nimages/train/0000.png,-1\n")
    with pytest.raises(ConfigError, match="bad.csv \\(num_classes = 3\\) line 2: label -1 out of range"):
        create_source("folder_csv", root, train_csv="bad.csv", num_classes=3)
    (root / "bad.csv").write_text("path,label\nimages/train/0000.png,3,x\n")
    with pytest.raises(ConfigError, match="bad.csv line 2: .* is not 'path,label'"):
        create_source("folder_csv", root, train_csv="bad.csv")
    (root / "bad.csv").write_text("path,label\n")
    with pytest.raises(ConfigError, match="train_csv = bad.csv: no 'path,label' rows"):
        create_source("folder_csv", root, train_csv="bad.csv")
    with pytest.raises(ConfigError, match="test_csv = missing.csv: file not found"):
        create_source("folder_csv", root, test_csv="missing.csv")
    (root / "images/train/0003.png").unlink()
    with pytest.raises(ConfigError, match="1 of 8 listed images are missing .*first: images/train/0003.png"):
        create_source("folder_csv", root)
    with pytest.raises(ConfigError, match="directory not found"):
        create_source("folder_csv", tmp_path / "absent")


def test_registry_errors_name_what_is_allowed():
    with pytest.raises(
        ConfigError, match="dataset = 'imagenet': unknown; allowed are .*cifar10.*digits.*folder_csv"
    ):
        create_source("imagenet", "/tmp")
    with pytest.raises(ConfigError, match="options \\['strict_sizes'\\]: unknown"):
        create_source("digits", None, strict_sizes=False)


def test_imageset_checks_and_subset():
    s = ImageSet(np.array([1, 2, 3]), np.array([1, -1, 3]), images=np.zeros((3, 4, 4, 3), np.uint8))
    sub = s.subset([2, 0])
    assert sub.labels.tolist() == [3, 1] and sub.true_labels.tolist() == [3, 1] and sub.images.shape[0] == 2
    with pytest.raises(ValueError, match="3 images, 2 labels"):
        ImageSet(np.array([1, 2]), np.array([1, 2]), images=np.zeros((3, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="exactly one of"):
        ImageSet(np.array([1]), np.array([1]))


def test_folder_csv_warns_when_images_are_resized_by_two_or_more(tmp_path):
    """The README's resize warning: 16-px images at the default image_size 224 (14x) or at 8 (½) say so; at
    their own size, or less than 2x away (24 px), no warning."""
    root = write_folder_csv(tmp_path, n=24, num_classes=3, n_clean=0, n_val=0, n_test=0, image_size=16)
    for size in (224, 32, 8):
        with pytest.warns(
            UserWarning, match=f"folder_csv images are 16x16 px .*image_size = {size} resizes them"
        ):
            create_source("folder_csv", root, image_size=size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for size in (16, 24, 9):
            create_source("folder_csv", root, image_size=size)
