"""Own images: the hold-out, batch and epoch length fitted to a small dataset or a one-line refusal; labels given
as class names; a label that leaves classes empty diagnosed as such."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.digits_folder import NAMES, write_digits_folder
from helpers.paths import CONFIGS
from lnl.data.datamodule import NoisyLabelDataModule
from lnl.data.noise import NoiseSpec
from lnl.data.sizing import MIN_PER_CLASS, MIN_STEPS, fit_to_data
from lnl.data.sources import create_source
from lnl.errors import ConfigError
from lnl.run.main import main


def own(root: Path, **kwargs) -> NoisyLabelDataModule:
    args = dict(dataset="folder_csv", root=str(root), folder={"image_size": 32}, noise=NoiseSpec(kind="none"),
                val_per_class=10, val_labels="noisy", batch_size=64, scale_to_data=True)  # fmt: skip
    return NoisyLabelDataModule(**(args | kwargs))


def test_sizing_holds_out_a_fifth_of_the_smallest_class_and_keeps_eight_steps_per_epoch() -> None:
    s = fit_to_data(np.array([15] * 10), val_per_class=10, batch_size=64)
    assert (s.val_per_class, s.batch_size, s.train_images, s.samples_per_epoch) == (3, 15, 120, 120)
    big = fit_to_data(np.array([60] * 10), val_per_class=10, batch_size=64)
    assert (big.val_per_class, big.batch_size, big.samples_per_epoch) == (10, 62, 500)  # the config's caps
    tiny = fit_to_data(np.array([12, 14]), val_per_class=10, batch_size=64)
    assert tiny.batch_size == 8 and tiny.samples_per_epoch == MIN_STEPS * 8 > tiny.train_images == 22
    few = MIN_PER_CLASS - 1
    with pytest.raises(
        ConfigError, match=f"class 'dog' has {few} images; lnl needs at least {MIN_PER_CLASS} per"
    ):
        fit_to_data(np.array([30, few]), val_per_class=10, batch_size=64, names=["cat", "dog"])


def test_a_small_folder_gets_a_fitted_hold_out_and_eight_batches_per_epoch(in_tmp: Path) -> None:
    folder = write_digits_folder(in_tmp / "my_images", 200, noise=0.3)
    dm = own(folder.root)
    smallest = int(np.bincount(folder.given, minlength=10).min())
    assert (
        dm.hparams.val_per_class == int(0.2 * smallest) and len(dm.val_index) == 10 * dm.hparams.val_per_class
    )
    assert dm.hparams.batch_size == len(dm.noisy_index) // MIN_STEPS
    assert len(dm.train_dataloader()["noisy"]) == MIN_STEPS


def test_too_few_images_in_a_class_is_one_line_before_any_run_directory(
    in_tmp: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = write_digits_folder(in_tmp / "my_images", 100, noise=0.3)
    counts = np.bincount(folder.given, minlength=10)
    assert counts.min() < MIN_PER_CLASS  # a hundred images of ten classes: some class has too few
    config = CONFIGS / "own_data.yaml"
    args = ["fit", "--config", str(config), "--data.root", "my_images", "--data.folder.image_size", "32"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lnl: error: data.folder.train_csv = train.csv: class ")
    assert f"has {counts.min()} images; lnl needs at least {MIN_PER_CLASS} per class" in err[0]
    assert not Path("runs").exists()


def test_class_names_are_read_sorted_and_map_to_ids(in_tmp: Path) -> None:
    folder = write_digits_folder(in_tmp / "my_images", 60, noise=0.0, names=True)
    source = create_source("folder_csv", folder.root)
    assert source.class_names == sorted(NAMES) and source.num_classes == 10
    ids = source.train().labels
    assert [source.class_names[i] for i in ids] == [NAMES[t] for t in folder.true]
    headless = (folder.root / "train.csv").read_text().split("\n", 1)[1]  # no header: first row is a file
    (folder.root / "headless.csv").write_text(headless)
    assert np.array_equal(
        create_source("folder_csv", folder.root, train_csv="headless.csv").train().labels, ids
    )


def test_labels_mixing_ids_and_names_or_a_wrong_num_classes_are_refused(in_tmp: Path) -> None:
    folder = write_digits_folder(in_tmp / "my_images", 30, noise=0.0, names=True)
    rows = (folder.root / "train.csv").read_text().splitlines()
    (folder.root / "mixed.csv").write_text("\n".join([*rows[:3], rows[3].rsplit(",", 1)[0] + ",7"]) + "\n")
    with pytest.raises(ConfigError, match="mixed.csv line 2: label '.*' is a class name but .*mixed.csv line 4 "
                                          "has the class id 7; write every label"):  # fmt: skip
        create_source("folder_csv", folder.root, train_csv="mixed.csv")
    named = len(set(folder.true))
    with pytest.raises(ConfigError, match=f"data.folder.num_classes = 12: the CSVs name {named} classes"):
        create_source("folder_csv", folder.root, num_classes=12)


def test_a_label_leaving_classes_without_images_is_diagnosed_as_such(in_tmp: Path) -> None:
    folder = write_digits_folder(in_tmp / "my_images", 120, noise=0.0)
    rows = (folder.root / "train.csv").read_text().splitlines()
    rows[57] = rows[57].rsplit(",", 1)[0] + ",12"
    (folder.root / "train.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match="train.csv line 58: label 12 makes 13 classes \\(0..12\\), but 2 of "
                                          "them have no image \\(10, 11\\)"):  # fmt: skip
        create_source("folder_csv", folder.root)
