"""The report's pictures read without the truth: structure of the figures (axes, titles, masked values), not
pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lnl.plots import dml_selection_figure
from lnl.report.estimates import estimate_noise
from lnl.report.label_report import LabelReport, ReportSummary
from lnl.report.pictures import (
    curve_group,
    label_correction_figure,
    learning_curves_figure,
    per_class_accuracy_figure,
    transitions_figure,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"]


def dml_history(truth: bool) -> list[dict]:
    records = []
    for epoch in range(3):
        record = {"epoch": epoch, "R": [0.6, 0.7, 0.8]}
        if truth:
            record |= {
                "precision": 0.9,
                "recall": 0.8,
                "R_err": 0.1,
                "clean_rate": 0.7,
                "share": [0.6, 0.7, math.nan],
            }
        records.append(record)
    return records


def test_dml_selection_leaves_out_the_precision_panel_without_true_labels() -> None:
    with_truth = dml_selection_figure(dml_history(truth=True))
    assert titles(with_truth) == ["selected set S", "selection ratios", "per class, epoch 2"]
    without = dml_selection_figure(dml_history(truth=False))
    assert titles(without) == ["selection ratios", "per class, epoch 2"]
    ratios, per_class = without.axes
    assert [line.get_label() for line in ratios.lines] == ["mean R(c)"]  # no truth-based curves
    assert len(per_class.patches) == 3  # R(c) bars only, no clean-share bars


def test_learning_curves_put_each_scale_on_its_own_axis() -> None:
    history = [{"epoch": e, "train/loss_student": 2.0 / (e + 1), "train/loss_teacher": 1.5, "val/acc": 0.1 * e,
                "train/sel_precision_epoch": 0.8, "train/clean_rate": 0.7, "train/h_epoch": 3.0 + e}
               for e in range(4)]  # fmt: skip
    fig = learning_curves_figure(history)
    assert titles(fig) == ["losses", "accuracies", "rates (0-1)", "other"]
    by_title = {ax.get_title(): sorted(line.get_label() for line in ax.lines) for ax in fig.axes}
    assert by_title == {
        "losses": ["train/loss_student", "train/loss_teacher"],
        "accuracies": ["train/sel_precision_epoch", "val/acc"],
        "rates (0-1)": ["train/clean_rate"],
        "other": ["train/h_epoch"],
    }
    assert (
        curve_group("val/acc", [math.nan, 0.5]) == "accuracies" and curve_group("train/x", [2.0]) == "other"
    )
    only_losses = learning_curves_figure([{"epoch": 0, "train/loss": 1.0}, {"epoch": 1, "train/loss": 0.5}])
    assert titles(only_losses) == ["losses"]  # no empty axes


def test_an_empty_class_is_masked_in_the_transition_estimate_and_has_no_accuracy_bar() -> None:
    rng = np.random.default_rng(0)
    given = rng.integers(0, 3, size=300)  # classes 0..2 used, class 3 empty
    probs = np.eye(4)[given] * 0.9 + 0.025
    noise = estimate_noise(probs, given, 4)
    assert np.isnan(noise.transition[3]).all()
    fig = transitions_figure(ReportSummary(300, 0, 0, "labels kept as given", noise, None))
    (image,) = fig.axes[0].images
    shown = image.get_array()
    assert np.ma.is_masked(shown) and shown.mask[3].all() and not shown.mask[:3].any()
    assert "grey: no samples" in fig.axes[0].get_title()
    bars = per_class_accuracy_figure(np.array([0.9, np.nan, 0.5]))
    assert [round(p.get_height(), 3) for p in bars.axes[0].patches] == [0.9, 0.5]
    assert [t.get_text() for t in bars.axes[0].texts] == ["n/a"]


def test_label_correction_without_truth_draws_the_gate_of_every_label_and_no_empty_panel() -> None:
    n = 50
    report = LabelReport(
        index=np.arange(n), split=np.array(["noisy"] * n, dtype=object), given=np.zeros(n, dtype=np.int64),
        true=np.full(n, -1), probs=np.full((n, 2), 0.5), issue_score=np.zeros(n), candidate=np.zeros(n, dtype=np.int64),
        noise=estimate_noise(np.full((n, 2), 0.5), np.zeros(n, dtype=np.int64), 2), flag=np.full(n, "no", dtype=object),
        corrected=np.zeros(n, dtype=np.int64), decision="labels kept as given", columns={"gate_weight": np.linspace(0, 1, n)},
    )  # fmt: skip
    fig = label_correction_figure(report, [{"epoch": 0, "train/loss": 1.0}])
    assert titles(fig) == ["gate weight w on the given label"]
    (ax,) = fig.axes
    assert ax.get_legend_handles_labels()[1] == ["truth unknown"]
    assert sum(p.get_height() for p in ax.patches) == n
    assert label_correction_figure(LabelReport(**{**vars(report), "columns": {}}), []) is None


def test_class_axes_carry_the_class_names() -> None:
    names = ["cat", "dog", "zebra"]
    given = np.random.default_rng(0).integers(0, 3, size=90)
    noise = estimate_noise(np.eye(3)[given] * 0.9 + 0.03, given, 3)
    fig = transitions_figure(ReportSummary(90, 0, 0, "labels kept as given", noise, None), names)
    ax = fig.axes[0]
    assert (
        [t.get_text() for t in ax.get_xticklabels()] == names == [t.get_text() for t in ax.get_yticklabels()]
    )
    bars = per_class_accuracy_figure(np.array([0.9, np.nan, 0.5]), class_names=names)
    assert [t.get_text() for t in bars.axes[0].get_xticklabels()] == names
    history = [{"epoch": 0, "R": [0.8, 0.7, 0.9]}]
    (ax_c,) = [a for a in dml_selection_figure(history, names).axes if a.get_title().startswith("per class")]
    assert [t.get_text() for t in ax_c.get_xticklabels()] == names
