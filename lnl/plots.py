"""Pictures of a run, written as PNG files (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any


def new_figure(ncols: int, width: float = 4.2, height: float = 3.4) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width * ncols, height), constrained_layout=True)


def save_figure(fig: Any, path: str) -> str:
    """Write `fig` as a PNG at `path` (creating its folder) and close it."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def missing_grey(name: str) -> Any:
    """Matplotlib colour map `name` drawing masked (missing) values light grey."""
    import matplotlib

    cmap = matplotlib.colormaps[name].copy()
    cmap.set_bad("lightgrey")
    return cmap


def class_ticks(ax: Any, names: Sequence[str] | None, axis: str = "x") -> None:
    """Label a class axis 0..C−1 with the class names (when the data has names and there are at most 40)."""
    if not names or len(names) > 40:
        return
    ticks = list(range(len(names)))
    long = max(len(str(n)) for n in names) > 3
    if axis == "x":
        ax.set_xticks(
            ticks, [str(n) for n in names], rotation=90 if long else 0, fontsize=7 if long else None
        )
    else:
        ax.set_yticks(ticks, [str(n) for n in names], fontsize=7 if long else None)


def _finite(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def dml_selection_figure(history: Sequence[dict[str, Any]], class_names: Sequence[str] | None = None) -> Any:
    """DML's selection over training (the DML paper's Fig. 3(e), 4(c), 5), from per-epoch records.

    With true labels, first: selection precision ("estimated accuracy") and recall per epoch, with the data's clean
    rate. Then: mean R(c) (with the mean clean share and the mean |R(c) − clean share| when the truth is known),
    and R(c) (with each class's clean share) in the last epoch, on an axis of class names when the groups are the
    data's named classes. Without true labels the first panel is left out.
    """
    epochs = [r["epoch"] for r in history]
    known = [r for r in history if "precision" in r]
    fig, axes = new_figure(3 if known else 2)
    axes = list(axes)
    if known:
        ax_p = axes.pop(0)
        e = [r["epoch"] for r in known]
        ax_p.plot(e, _finite([r["precision"] for r in known]), "o-", label="precision (estimated accuracy)")
        ax_p.plot(e, _finite([r["recall"] for r in known]), "s-", label="recall")
        ax_p.plot(e, _finite([r["clean_rate"] for r in known]), "k--", label="clean rate of the data")
        ax_p.set(title="selected set S", xlabel="epoch", ylim=(0, 1.02))
        ax_p.legend(loc="lower right", fontsize=8)
    ax_r, ax_c = axes

    mean_r = [sum(r["R"]) / len(r["R"]) for r in history]
    ax_r.plot(epochs, mean_r, "o-", label="mean R(c)")
    if known:
        e = [r["epoch"] for r in known]
        shares = [[s for s in r["share"] if s is not None and not math.isnan(s)] for r in known]
        ax_r.plot(e, [sum(s) / max(len(s), 1) for s in shares], "k--", label="mean clean share")
        ax_r.plot(e, _finite([r["R_err"] for r in known]), "^-", label="mean |R(c) − share|")
    ax_r.set(title="selection ratios", xlabel="epoch", ylim=(0, 1.02))
    ax_r.legend(loc="upper right", fontsize=8)

    last = history[-1]
    classes = list(range(len(last["R"])))
    width = 0.4 if "share" in last else 0.8
    shift = width / 2 if "share" in last else 0.0
    ax_c.bar([c - shift for c in classes], last["R"], width, label="R(c)")
    if "share" in last:
        ax_c.bar([c + shift for c in classes], _finite(last["share"]), width, label="clean share")
    ax_c.set(title=f"per class, epoch {last['epoch']}", xlabel="class (group)", ylim=(0, 1.02))
    if class_names is not None and len(class_names) == len(classes):
        class_ticks(ax_c, class_names)
    elif len(classes) <= 20:
        ax_c.set_xticks(classes)
    ax_c.legend(loc="lower right", fontsize=8)
    return fig


def plot_dml_selection(
    history: Sequence[dict[str, Any]], path: str, class_names: Sequence[str] | None = None
) -> str:
    """`dml_selection_figure` as a PNG."""
    return save_figure(dml_selection_figure(history, class_names), path)
