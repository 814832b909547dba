"""The report's pictures as PNG files (matplotlib's Agg backend): transitions, per-class accuracy, learning curves,
issue scores, and each method's mechanism (gate weights, label recovery)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lnl.plots import new_figure, save_figure
from lnl.report.label_report import LabelReport, ReportSummary


def plot_transitions(summary: ReportSummary, path: str) -> str:
    """Heat maps of the realized T (given vs true, when known) and the estimate T̂, rows = true class."""
    mats = ([("realized T: P(given | true)", summary.realized)] if summary.realized is not None else []) + [
        (f"estimated T̂ (noise rate {summary.noise.noise_rate:.3f})", summary.noise.transition)
    ]
    fig, axes = new_figure(len(mats), width=4.4, height=4.0)
    for ax, (title, m) in zip(np.atleast_1d(axes), mats):
        image = ax.imshow(np.nan_to_num(m, nan=0.0), vmin=0, vmax=1, cmap="viridis")
        ax.set(title=title, xlabel="given label", ylabel="true class")
        fig.colorbar(image, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def plot_per_class_accuracy(accuracy: np.ndarray, path: str, title: str = "test accuracy per class") -> str:
    """Bar chart of accuracy per class (NaN bars for classes absent from the set)."""
    fig, ax = new_figure(1, width=max(4.2, 0.35 * len(accuracy)))
    ax.bar(np.arange(len(accuracy)), np.nan_to_num(accuracy, nan=0.0))
    ax.set(title=title, xlabel="class", ylabel="accuracy", ylim=(0, 1.02))
    return save_figure(fig, path)


def plot_learning_curves(history: Sequence[dict[str, Any]], path: str) -> str:
    """Validation accuracies (left) and epoch-level training metrics (right) per epoch."""
    fig, (ax_v, ax_t) = new_figure(2)
    keys = sorted({k for r in history for k in r if k != "epoch"})
    epochs = [r["epoch"] for r in history]
    for ax, prefix in ((ax_v, "val/"), (ax_t, "train/")):
        for k in [k for k in keys if k.startswith(prefix)][:8]:
            ax.plot(epochs, [r.get(k, math.nan) for r in history], "o-", ms=3, label=k)
        ax.set(title=prefix.rstrip("/"), xlabel="epoch")
        if ax.lines:
            ax.legend(fontsize=7)
    return save_figure(fig, path)


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


def plot_label_correction(report: LabelReport, history: Sequence[dict[str, Any]], path: str) -> str | None:
    """A label-correcting method's mechanism: its gate weight on right vs wrong labels (EMLC) and the accuracy of
    its corrected labels per epoch (`train/label_recovery`, `train/wrong_label_recovery`; EMLC, MLC)."""
    gate = report.columns.get("gate_weight")
    curves = [
        k for k in ("train/label_recovery", "train/wrong_label_recovery") if any(k in r for r in history)
    ]
    if gate is None and not curves:
        return None
    fig, axes = new_figure(int(gate is not None) + 1)
    axes = list(np.atleast_1d(axes))
    if gate is not None:
        ax, noisy = axes.pop(0), report.part("noisy")
        known = noisy & (report.true >= 0)
        bins = np.linspace(0, 1, 26)
        ax.hist(gate[known & (report.given == report.true)], bins, alpha=0.6, label="right label")
        ax.hist(gate[known & (report.given != report.true)], bins, alpha=0.6, label="wrong label")
        ax.set(title="gate weight w on the given label", xlabel="w", ylabel="samples")
        ax.legend(fontsize=8)
    ax = axes[0]
    epochs = [r["epoch"] for r in history]
    for k in curves:
        ax.plot(epochs, [r.get(k, math.nan) for r in history], "o-", ms=3, label=k.split("/")[1])
    ax.set(title="corrected-label accuracy", xlabel="epoch", ylim=(0, 1.02))
    if ax.lines:
        ax.legend(fontsize=8)
    return save_figure(fig, path)
