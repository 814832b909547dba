"""The report of real fits: files, pictures, W&B, corrected labels read back, `lnl report`, predictions, and the
README's own-data example run verbatim."""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from helpers.digits_folder import write_digits_folder
from helpers.paths import ROOT
from lnl.run.fit_report import EpochHistory
from lnl.run.main import main

CONFIGS = ROOT / "configs"
QUICK = ["--trainer.enable_model_summary=false", "--trainer.enable_progress_bar=false"]
SHORT_DML = ["--trainer.max_epochs=3", "--model.init_args.selection.warmup_epochs=1",
             "--model.init_args.selection.schedule_epochs=1"]  # fmt: skip
# best noisy-validation accuracy of the README example's first fit: 3x chance (measured: 0.5)
VAL_ACC_FLOOR = 0.3
PICTURES = ("transition.png", "issue_scores.png", "per_class_accuracy.png", "learning_curves.png")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    with Image.open(path) as image:
        image.verify()
        assert image.size[0] > 100 and image.size[1] > 100


@pytest.mark.slow
@pytest.mark.xdist_group("wandb")  # one offline W&B service at a time
def test_dml_fit_writes_report_pictures_and_a_wandb_run_with_them() -> None:
    args = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "logger" / "wandb.yaml"),
            *SHORT_DML, *QUICK]  # fmt: skip
    assert main(args) == 0
    run = Path("runs/quickstart/version_0")
    rows = read_csv(run / "label_report.csv")
    assert len(rows) == sum(1 for _ in (run / "labels.csv").open()) - 1  # every used training sample
    assert {
        "selection_frequency",
        "bank_score",
        "student_loss",
        "issue_score",
        "flagged",
        "corrected_label",
    } <= set(rows[0])
    for name in (*PICTURES, "dml_selection.png"):
        assert_png(run / name)
    results = json.loads((run / "results.json").read_text())
    # 3 epochs (1 of warm-up): seeds 0/1 measured AUROC 0.679/0.796 and last-epoch test accuracy 0.314/0.417; a
    # run that never steps gives 0.535 and 0.100
    assert results["report/auroc"] >= 0.6 and results["test/acc_last"] >= 0.2 and results["report/k"] > 0
    # DML's score (student loss + the loss bank) ranks better than the student's loss alone, i.e. better than
    # Confident Learning's self-confidence on the same probabilities (measured 0.643 vs 0.551)
    assert results["report/auroc"] > results["report/auroc_loss"]
    assert len(results["report/transition_estimate"]) == 10
    assert results["report/weights"] == "best_val"

    import wandb

    wandb.teardown()  # wait until the W&B service has written everything of the offline run
    wandb_run = next(Path("runs/wandb").glob("offline-run-*"))
    images = {p.name.split("_")[0] for p in (wandb_run / "files" / "media" / "images").rglob("*.png")}
    assert {"transition", "issue", "per", "learning"} <= images, images
    assert {"report", "dml"} <= {p.name for p in (wandb_run / "files" / "media" / "images").iterdir()}
    log = next(wandb_run.glob("*.wandb")).read_bytes()  # the offline run's records (summary, artifacts)
    for key in (b"report/auroc", b"report/noise_rate_estimate", b"test/acc_best_val", b"noise/realized_rate"):
        assert key in log, f"summary key {key!r} not in the offline run"
    for name in (
        b"run-report",
        b"label_report.csv",
        b"corrected_labels.csv",
        b"probabilities.npy",
        b"labels.csv",
        b"results.json",
    ):
        assert name in log, f"{name!r} not in the offline run's artifact records"


@pytest.mark.slow
def test_emlc_fit_draws_its_gate_and_label_recovery() -> None:
    args = ["fit", "--config", str(CONFIGS / "emlc_digits_unif40_k5.yaml"), "--trainer.max_epochs=2", *QUICK]
    assert main(args) == 0
    run = Path("runs/emlc_digits_unif40_k5/version_0")
    assert_png(run / "label_correction.png")
    rows = read_csv(run / "label_report.csv")
    assert all(0.0 < float(r["gate_weight"]) < 1.0 for r in rows)
    results = json.loads((run / "results.json").read_text())
    assert results["test/acc_best_val"] >= 0.3  # measured 0.469 after 2 epochs; chance and no learning: 0.100
    kept = {int(r["index"]) for r in read_csv(run / "labels.csv") if r["split"] in ("clean", "val")}
    assert len(kept) == 200  # the clean set and the clean validation set: their labels stay
    assert_corrected_labels_change_only_untrusted_labels(run, untrusted={"noisy"})


def assert_report_columns_keep_their_documented_meaning(run: Path, results: dict) -> None:
    """label_report.csv read against its documented contract (whatever the issue score's formula): the flagged
    noisy rows are the `report/n_flagged` highest issue scores, a flag is `relabel` or `suspect`, corrected_label =
    given_label except on `relabel` rows, where it differs, confidence = the top-1 probability (≥ the given
    label's probability exp(−student_loss), equal to it where the prediction is the given label), ranking the
    noisy part by issue_score reproduces `report/auroc`, and `probabilities.npy` holds each row's posterior (rows
    sum to 1, argmax = predicted_label, max = confidence, the given label's = exp(−student_loss))."""
    rows = read_csv(run / "label_report.csv")
    score = np.array([float(r["issue_score"]) for r in rows])
    flag = np.array([r["flagged"] for r in rows])
    assert set(flag) <= {"no", "suspect", "relabel"}
    flagged, relabel = flag != "no", flag == "relabel"
    given, corrected = (np.array([int(r[k]) for r in rows]) for k in ("given_label", "corrected_label"))
    np.testing.assert_array_equal(corrected[~relabel], given[~relabel])
    assert relabel.any() and (corrected[relabel] != given[relabel]).all()  # relabel rows do get corrected
    confidence = np.array([float(r["confidence"]) for r in rows])
    p_given = np.exp(-np.array([float(r["student_loss"]) for r in rows]))
    same = np.array([r["predicted_label"] == r["given_label"] for r in rows])
    assert same.any() and (~same).any()
    np.testing.assert_allclose(confidence[same], p_given[same], atol=2e-5)
    assert (confidence + 2e-5 >= p_given).all() and (confidence >= 0.1 - 1e-5).all()  # top-1 of 10 classes
    probs = np.load(run / "probabilities.npy")
    assert probs.shape == (len(rows), 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(1), [int(r["predicted_label"]) for r in rows])
    np.testing.assert_allclose(probs.max(1), confidence, atol=1e-5)
    given_probs = probs[np.arange(len(rows)), given]
    np.testing.assert_allclose(given_probs, p_given, atol=1e-5, rtol=1e-4)
    noisy = np.array([r["split"] == "noisy" for r in rows])
    wrong = np.array([r["given_label"] != r["true_label"] for r in rows])[noisy]
    assert roc_auc_score(wrong, score[noisy]) == pytest.approx(results["report/auroc"], abs=2e-3)
    assert int(flagged[noisy].sum()) == results["report/n_flagged"]
    assert score[noisy][flagged[noisy]].min() >= score[noisy][~flagged[noisy]].max()  # the top scores


def assert_corrected_labels_change_only_untrusted_labels(run: Path, untrusted: set[str]) -> int:
    """corrected_labels.csv (README): every row of the training list; the corrected label for the untrusted
    parts (the noisy part, and a noisy validation hold-out), the given label everywhere else. Returns the number
    of labels changed."""
    given = {int(r["index"]): (r["split"], int(r["noisy_label"])) for r in read_csv(run / "labels.csv")}
    report = {int(r["index"]): int(r["corrected_label"]) for r in read_csv(run / "label_report.csv")}
    corrected = {int(r["index"]): int(r["label"]) for r in read_csv(run / "corrected_labels.csv")}
    assert len(corrected) == 1437 and set(given) <= set(corrected)
    changed = 0
    for i, (split, label) in given.items():
        expected = report[i] if split in untrusted else label
        assert corrected[i] == expected, (i, split)
        changed += corrected[i] != label
    return changed


@pytest.mark.slow
def test_corrected_labels_train_back_and_lnl_report_reproduces_the_fit() -> None:
    """CE, then CE on its corrected labels (the README's two commands): the second run's realized noise rate is
    exactly 1 − the first report's corrected-label accuracy; `lnl report` on the best checkpoint rewrites the same
    label report."""
    first = ["fit", "--config", str(CONFIGS / "quickstart_ce.yaml"), "--trainer.max_epochs=2", *QUICK]
    assert main(first) == 0
    run = Path("runs/quickstart_ce/version_0")
    results = json.loads((run / "results.json").read_text())
    corrected = read_csv(run / "corrected_labels.csv")
    assert len(corrected) == 1437 and list(corrected[0]) == ["index", "label"]
    assert results["report/auroc"] >= 0.85  # measured 0.938 after 2 epochs; no learning: 0.529
    # the confidence over training adds to the final loss: the score ranks better than 1 − p(ỹ | x), Confident
    # Learning's self-confidence on the same probabilities (measured 0.938 vs 0.931; equal if it added nothing)
    assert results["report/auroc"] > results["report/auroc_loss"]
    assert_report_columns_keep_their_documented_meaning(run, results)
    assert assert_corrected_labels_change_only_untrusted_labels(run, untrusted={"noisy", "val"}) > 0

    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for k in (
        "",
        "_1",
    ):  # a new folder each time; the run's own files, results.json included, stay as they are
        assert main(["report", results["best_checkpoint"]]) == 0
        out = run / "eval" / f"report_{Path(results['best_checkpoint']).stem}{k}"
        assert (out / "label_report.csv").read_bytes() == before[run / "label_report.csv"]
        assert (out / "corrected_labels.csv").read_bytes() == before[run / "corrected_labels.csv"]
        assert_png(out / "learning_curves.png")  # the epoch history comes back from the checkpoint
        again = json.loads((out / "results.json").read_text())
        assert again["report/auroc"] == results["report/auroc"] and "test/acc_best_val" not in again
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "eval" not in p.parts} == before
    assert main(["report", results["best_checkpoint"], "--out", str(run)]) == 2  # not a new or empty folder
    assert_predictions_of_a_split_have_top5_columns(run, results["best_checkpoint"])

    second = [
        *first,
        f"--data.init_args.noise={{kind: file, file: {run / 'corrected_labels.csv'}, rate: 0, count: sampled}}",
    ]
    assert main(second) == 0
    again = json.loads(Path("runs/quickstart_ce/version_1/results.json").read_text())
    assert again["noise/realized_rate"] == pytest.approx(
        1.0 - results["report/corrected_accuracy"], abs=1e-12
    )


def assert_predictions_of_a_split_have_top5_columns(run: Path, checkpoint: str) -> None:
    """`lnl predict --data.predict_on val` (README): one row per validation image with its given label, the
    predicted label and confidence (those of the label report, same weights) and the top-5 labels and
    probabilities in decreasing order."""
    args = [
        "predict",
        "--config",
        str(run / "config.yaml"),
        "--ckpt_path",
        checkpoint,
        "--data.predict_on=val",
    ]
    assert main([*args, *QUICK[1:]]) == 0
    rows = read_csv(run / "predictions.csv")
    labels = {r["index"]: r for r in read_csv(run / "labels.csv")}
    report = {r["index"]: r for r in read_csv(run / "label_report.csv")}
    assert sorted(r["index"] for r in rows) == sorted(i for i, r in labels.items() if r["split"] == "val")
    for row in rows:
        top = [(int(row[f"top{j}_label"]), float(row[f"top{j}_prob"])) for j in range(1, 6)]
        probs = [p for _, p in top]
        assert (
            len({label for label, _ in top}) == 5
            and probs == sorted(probs, reverse=True)
            and sum(probs) <= 1 + 5e-5
        )
        assert row["given_label"] == labels[row["index"]]["noisy_label"]
        assert int(row["predicted_label"]) == top[0][0] and float(row["confidence"]) == top[0][1]
        assert row["predicted_label"] == report[row["index"]]["predicted_label"]
        assert float(row["confidence"]) == pytest.approx(float(report[row["index"]]["confidence"]), abs=2e-5)


def readme_own_data_example() -> tuple[int, int, list[str]]:
    """The README's own-data example: its stated size (images, classes) and its commands."""
    text = (ROOT / "README.md").read_text()
    size = re.search(r"The example below, (\d+) 32-px images of (\d+) classes", text)
    block = re.search(r"<!-- own-data-example.*?-->\s*```bash\n(.*?)```", text, re.S)
    assert size and block, "README lost its own-data example or the size it states"
    commands = [line for line in block.group(1).splitlines() if line.startswith("lnl ")]
    return int(size.group(1)), int(size.group(2)), commands


@pytest.mark.slow
def test_readme_own_data_example_runs_verbatim(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """At the size the README states, on Digits rendered as 32-px PNGs with 30 % of the labels wrong: the three
    commands run as written, the model learns (noisy-validation accuracy well above chance), the corrected labels
    are no worse than the given ones, and every file is there."""
    n, classes, commands = readme_own_data_example()
    (in_tmp / "configs").symlink_to(CONFIGS)
    folder = write_digits_folder(in_tmp / "my_images", n, noise=0.3, classes=classes)
    write_digits_folder(in_tmp / "new_images", 7, noise=0.0, seed=1)
    assert len(commands) == 3
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, command
    out = capsys.readouterr().out
    assert "labels as given" in out
    run = Path("runs/own_data/version_0")
    results = json.loads((run / "results.json").read_text())
    assert results["val/acc_best"] >= VAL_ACC_FLOOR, results["val/acc_best"]  # chance: 1 / classes
    report = read_csv(run / "label_report.csv")
    assert report[0]["path"].endswith(".png") and len(report) == n
    predictions = read_csv(run / "predictions.csv")
    assert len(predictions) == 7 and all(Path(p["path"]).is_file() for p in predictions)
    assert all(0.0 <= float(p["confidence"]) <= 1.0 for p in predictions)
    corrected = read_csv(run / "corrected_labels.csv")
    assert list(corrected[0]) == ["path", "label"] and [r["path"] for r in corrected] == folder.paths
    right = [int(r["label"]) == t for r, t in zip(corrected, folder.true)]
    assert sum(right) >= sum(folder.given == folder.true)  # the corrected labels are no worse than the given
    assert (Path("runs/own_data/version_1") / "results.json").is_file()


def test_lnl_report_of_a_missing_checkpoint_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["report", "runs/x/version_0/checkpoints/nope.ckpt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lnl: error: ckpt_path") and "nope.ckpt" in err[0]


def test_predict_on_a_missing_image_folder_is_one_line_and_writes_nothing(
    capsys: pytest.CaptureFixture,
) -> None:
    torch.save({"state_dict": {}}, "weights.ckpt")  # predict needs a checkpoint; the folder is checked next
    args = [
        "predict",
        "--config",
        str(CONFIGS / "quickstart_ce.yaml"),
        "--ckpt_path=weights.ckpt",
        "--data.init_args.predict_images=nowhere",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lnl: error: data.predict_images = nowhere")
    assert not Path("runs").exists()


def test_epoch_history_is_restored_on_resume_but_not_cut_back_by_a_later_load() -> None:
    history = EpochHistory()
    history.load_state_dict({"records": [{"epoch": 0.0}, {"epoch": 1.0}]})  # a resume: restored
    assert len(history.records) == 2
    history.records.append({"epoch": 2.0})
    history.load_state_dict({"records": [{"epoch": 0.0}]})  # testing an earlier best checkpoint after fit
    assert [r["epoch"] for r in history.records] == [0.0, 1.0, 2.0]
