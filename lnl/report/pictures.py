"""The report's pictures as PNG files (matplotlib's Agg backend): transitions, per-class accuracy, learning curves,
issue scores, and each method's mechanism (gate weights, label recovery)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lnl.plots import class_ticks, missing_grey, new_figure, save_figure
from lnl.report.label_report import LabelReport, ReportSummary


def transitions_figure(summary: ReportSummary, class_names: Sequence[str] | None = None) -> Any:
    """Heat maps of the realized T (given vs true, when known) and the estimate T̂, rows = true class, axes labelled
    with the class names when the data has them; a row of a class without samples (NaN) is masked and drawn grey,
    not as zeros."""
    mats = ([("realized T: P(given | true)", summary.realized)] if summary.realized is not None else []) + [
        (f"estimated T̂ (noise rate {summary.noise.noise_rate:.3f})", summary.noise.transition)
    ]
    fig, axes = new_figure(len(mats), width=4.4, height=4.0)
    for ax, (title, m) in zip(np.atleast_1d(axes), mats):
        image = ax.imshow(np.ma.masked_invalid(m), vmin=0, vmax=1, cmap=missing_grey("viridis"))
        empty = np.isnan(m).all(1)
        ax.set(
            title=title + (" (grey: no samples)" if empty.any() else ""),
            xlabel="given label",
            ylabel="true class",
        )
        class_ticks(ax, class_names, "x")
        class_ticks(ax, class_names, "y")
        fig.colorbar(image, ax=ax, fraction=0.046)
    return fig


def plot_transitions(summary: ReportSummary, path: str, class_names: Sequence[str] | None = None) -> str:
    """`transitions_figure` as a PNG."""
    return save_figure(transitions_figure(summary, class_names), path)


def per_class_accuracy_figure(accuracy: np.ndarray, title: str = "test accuracy per class",
                              class_names: Sequence[str] | None = None) -> Any:  # fmt: skip
    """Bar chart of accuracy per class (named when the data has names); a class absent from the set gets no bar,
    only an "n/a" mark."""
    fig, ax = new_figure(1, width=max(4.2, 0.35 * len(accuracy)))
    classes = np.arange(len(accuracy))
    have = ~np.isnan(accuracy)
    ax.bar(classes[have], accuracy[have])
    for c in classes[~have]:
        ax.text(c, 0.02, "n/a", ha="center", va="bottom", rotation=90, fontsize=7)
    ax.set(title=title, xlabel="class", ylabel="accuracy", ylim=(0, 1.02))
    class_ticks(ax, class_names)
    return fig


def plot_per_class_accuracy(accuracy: np.ndarray, path: str, title: str = "test accuracy per class",
                            class_names: Sequence[str] | None = None) -> str:  # fmt: skip
    """`per_class_accuracy_figure` as a PNG."""
    return save_figure(per_class_accuracy_figure(accuracy, title, class_names), path)


CURVE_GROUPS = ("losses", "accuracies", "rates (0-1)", "other")


def curve_group(key: str, values: Sequence[float]) -> str:
    """Which axis a learning curve goes on: losses, accuracies (acc, precision, recall, recovery), other values
    that stay within [0, 1] (rates, fractions), or anything else."""
    name = key.split("/", 1)[-1]
    if "loss" in name:
        return "losses"
    if any(w in name for w in ("acc", "precision", "recall", "recovery")):
        return "accuracies"
    finite = [v for v in values if not math.isnan(v)]
    return "rates (0-1)" if finite and all(0.0 <= v <= 1.0 for v in finite) else "other"


def learning_curves_figure(history: Sequence[dict[str, Any]]) -> Any:
    """Per-epoch curves of the `val/*` and `train/*` metrics, one axis per scale (`curve_group`): losses,
    accuracies, rates, other; groups without a curve get no axis."""
    keys = sorted({k for r in history for k in r if k != "epoch" and k.startswith(("val/", "train/"))})
    epochs = [r["epoch"] for r in history]
    series = {k: [float(r.get(k, math.nan)) for r in history] for k in keys}
    groups = {g: [k for k in keys if curve_group(k, series[k]) == g] for g in CURVE_GROUPS}
    groups = {g: ks for g, ks in groups.items() if ks} or {"losses": []}
    fig, axes = new_figure(len(groups))
    for ax, (group, ks) in zip(np.atleast_1d(axes), groups.items()):
        for k in ks:
            ax.plot(epochs, series[k], "o-", ms=3, label=k)
        ax.set(title=group, xlabel="epoch")
        if group in ("accuracies", "rates (0-1)"):
            ax.set_ylim(0, 1.02)
        if ax.lines:
            ax.legend(fontsize=7)
    return fig


def plot_learning_curves(history: Sequence[dict[str, Any]], path: str) -> str:
    """`learning_curves_figure` as a PNG."""
    return save_figure(learning_curves_figure(history), path)


def plot_issue_scores(report: LabelReport, path: str) -> str:
    """Histogram of the issue score on the noisy part, split by truly right / wrong labels when known."""
    noisy = report.part("noisy")
    score, given, true = report.issue_score[noisy], report.given[noisy], report.true[noisy]
    fig, ax = new_figure(1)
    bins = np.linspace(0, 1, 26)
    known = true >= 0
    if known.any():
        ax.hist(score[known & (given == true)], bins, alpha=0.6, label="right label")
        ax.hist(score[known & (given != true)], bins, alpha=0.6, label="wrong label")
    if (~known).any():
        ax.hist(score[~known], bins, alpha=0.6, label="truth unknown")
    ax.axvline(0.5, color="k", ls="--", lw=1)
    ax.set(title="issue score (noisy part)", xlabel="issue score", ylabel="samples")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def label_correction_figure(report: LabelReport, history: Sequence[dict[str, Any]]) -> Any | None:
    """A label-correcting method's mechanism: its gate weight on the given label (EMLC; split into right / wrong
    labels when the truth is known) and the accuracy of its corrected labels per epoch (`train/label_recovery`,
    `train/wrong_label_recovery`; EMLC, MLC; only logged with true labels). None when there is neither."""
    gate = report.columns.get("gate_weight")
    curves = [
        k for k in ("train/label_recovery", "train/wrong_label_recovery") if any(k in r for r in history)
    ]
    if gate is None and not curves:
        return None
    fig, axes = new_figure(int(gate is not None) + int(bool(curves)))
    axes = list(np.atleast_1d(axes))
    if gate is not None:
        ax, noisy = axes.pop(0), report.part("noisy")
        known = noisy & (report.true >= 0)
        bins = np.linspace(0, 1, 26)
        if known.any():
            ax.hist(gate[known & (report.given == report.true)], bins, alpha=0.6, label="right label")
            ax.hist(gate[known & (report.given != report.true)], bins, alpha=0.6, label="wrong label")
        if (noisy & ~known).any():
            ax.hist(gate[noisy & ~known], bins, alpha=0.6, label="truth unknown")
        ax.set(title="gate weight w on the given label", xlabel="w", ylabel="samples")
        ax.legend(fontsize=8)
    if curves:
        ax = axes[0]
        epochs = [r["epoch"] for r in history]
        for k in curves:
            ax.plot(epochs, [r.get(k, math.nan) for r in history], "o-", ms=3, label=k.split("/")[1])
        ax.set(title="corrected-label accuracy", xlabel="epoch", ylim=(0, 1.02))
        ax.legend(fontsize=8)
    return fig


def plot_label_correction(report: LabelReport, history: Sequence[dict[str, Any]], path: str) -> str | None:
    """`label_correction_figure` as a PNG (None when there is nothing to draw)."""
    fig = label_correction_figure(report, history)
    return save_figure(fig, path) if fig is not None else None
