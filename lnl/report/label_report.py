"""`label_report.csv` and `corrected_labels.csv`: every training sample with the method's view of its label.

Columns of `label_report.csv`: index, path (file-backed data), split (noisy / clean / val), given_label, true_label
(−1 unknown), predicted_label and confidence (the student), the method's own evidence columns, issue_score in
[0, 1] (higher = more likely mislabelled; defined by each method's `label_evidence`; full precision, so sorting the
file reproduces `report/auroc`), flagged (`no`, `suspect` or `relabel`: `lnl.report.decisions`) and corrected_label
(the method's label on `relabel` rows, the given one elsewhere). `corrected_labels.csv` holds one row per row of the training list: `path,label` for your
own images (a `folder_csv` train CSV) or `index,label` for built-in datasets (`noise.kind: file`).
`probabilities.npy` holds p̂(y | x) of every `label_report.csv` row, in its order.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lnl.report.class_names import label_writer, name_columns
from lnl.report.decisions import NONE, RELABEL, chance_check, decide, reliability_check
from lnl.report.estimates import (
    NoiseEstimate,
    auroc,
    corroborated_noise,
    precision_at_k,
    realized_transition,
    transition_mae,
)


@dataclass
class LabelReport:
    """Per-sample arrays over the used training samples, in index order (see the module docstring)."""

    index: np.ndarray
    split: np.ndarray
    given: np.ndarray
    true: np.ndarray
    probs: np.ndarray
    issue_score: np.ndarray
    candidate: np.ndarray
    noise: NoiseEstimate
    flag: np.ndarray
    corrected: np.ndarray
    decision: str
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    paths: list[str] | None = None
    class_names: list[str] | None = None  # id -> name (the `*_name` columns)

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def flagged(self) -> np.ndarray:
        return self.flag != NONE

    def part(self, name: str) -> np.ndarray:
        """Boolean mask of the samples of one split."""
        return self.split == name


@dataclass(frozen=True)
class ReportSummary:
    """Numbers of a label report on the noisy part: flags, AUROC / precision@K against the truth, noise estimate."""

    n_samples: int
    n_flagged: int
    n_relabelled: int
    decision: str
    noise: NoiseEstimate
    realized: np.ndarray | None
    auroc: float | None = None
    auroc_loss: float | None = None
    precision_at_k: float | None = None
    precision_at_k_loss: float | None = None
    k: int | None = None
    transition_mae: float | None = None
    corrected_accuracy: float | None = None
    given_accuracy: float | None = None

    def as_results(self) -> dict[str, Any]:
        """Flat `report/...` entries for results.json (matrices as nested lists)."""
        out: dict[str, Any] = {
            "report/n_samples": self.n_samples,
            "report/n_flagged": self.n_flagged,
            "report/n_relabelled": self.n_relabelled,
            "report/decision": self.decision,
            "report/noise_rate_estimate": self.noise.noise_rate,
            "report/noise_rate_corroborated": self.noise.corroborated_rate,
            "report/transition_estimate": _rounded(self.noise.transition),
        }
        if self.realized is not None:
            out["report/transition_realized"] = _rounded(self.realized)
        for name in ("auroc", "auroc_loss", "precision_at_k", "precision_at_k_loss", "k", "transition_mae",
                     "corrected_accuracy", "given_accuracy"):  # fmt: skip
            value = getattr(self, name)
            if value is not None:
                out[f"report/{name}"] = value
        return out


def _rounded(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(v) else round(float(v), 5) for v in row] for row in matrix]


@torch.no_grad()
def collect_label_report(
    model: Any, datamodule: Any, batch_size: int = 512, progress: Callable[[], None] = lambda: None
) -> LabelReport:
    """Run the method's `label_evidence` over every used training sample (eval transforms, one process); the noise
    estimate on the noisy part, then flags and corrections (`lnl.report.decisions.decide`). `progress` is called
    once per batch (the run's stall watchdog, lnl/run/watchdog.py)."""
    parts = {"noisy": datamodule.noisy_index, "clean": datamodule.clean_index, "val": datamodule.val_index}
    loader = datamodule.report_dataloader(batch_size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    model.begin_label_evidence()
    chunks: dict[str, list[np.ndarray]] = {}
    try:
        for batch in loader:
            progress()
            x, y, index = batch["x"].to(device), batch["y"].to(device), batch["index"].to(device)
            ev = model.label_evidence(x, y, index)
            fields = {
                "index": index,
                "probs": ev.probs,
                "issue_score": ev.issue_score,
                "candidate": ev.candidate,
            }
            for name, value in (fields | {f"col:{k}": v for k, v in ev.columns.items()}).items():
                chunks.setdefault(name, []).append(value.detach().double().cpu().numpy())
    finally:
        model.train(was_training)
    cat = {k: np.concatenate(v) for k, v in chunks.items()}
    index = cat["index"].astype(np.int64)
    split = np.empty(len(index), dtype=object)
    for name, ids in parts.items():
        split[np.isin(index, ids)] = name
    given = datamodule.given_labels[index].astype(np.int64)
    score = np.clip(np.nan_to_num(cat["issue_score"], nan=0.0), 0.0, 1.0)
    candidate = cat["candidate"].astype(np.int64)
    noisy, val = split == "noisy", split == "val"
    noise = corroborated_noise(cat["probs"][noisy], given[noisy], score[noisy], model.num_classes)
    untrusted = noisy | (val if datamodule.hparams.val_labels == "noisy" else False)
    predicted_val, noisy_val = cat["probs"][val].argmax(1), datamodule.hparams.val_labels == "noisy"
    held_out = chance_check(predicted_val, given[val]) or reliability_check(
        predicted_val, given[val], noise.noise_rate, model.num_classes, noisy_val
    )
    flag_rate = noise.corroborated_rate if noise.corroborated_rate is not None else noise.noise_rate
    decision = decide(score, given, candidate, noisy, untrusted, flag_rate, held_out)
    paths = datamodule.train_set.paths
    return LabelReport(
        index=index, split=split, given=given, true=np.asarray(datamodule.true_labels)[index].astype(np.int64),
        probs=cat["probs"], issue_score=score, candidate=candidate, noise=noise, flag=decision.flag,
        corrected=decision.corrected, decision=decision.reason,
        columns={k[4:]: v for k, v in cat.items() if k.startswith("col:")},
        paths=[paths[i] for i in index] if paths is not None else None,
        class_names=datamodule.source.class_names,
    )  # fmt: skip


def summarize(report: LabelReport, num_classes: int) -> ReportSummary:
    """Flags, relabels, the decision and the noise estimate on the noisy part; with true labels, AUROC,
    precision@K (K = the true number of wrong labels) for the issue score and for the student's plain loss, T̂'s
    error against the realized T, and the accuracy of the corrected labels against the given ones."""
    noisy = report.part("noisy")
    given, true, score = report.given[noisy], report.true[noisy], report.issue_score[noisy]
    noise = report.noise
    relabelled = int((report.flag[noisy] == RELABEL).sum())
    base = ReportSummary(int(noisy.sum()), int(report.flagged[noisy].sum()), relabelled, report.decision, noise,
                         None)  # fmt: skip
    known = true >= 0
    if not known.any():
        return base
    wrong = given[known] != true[known]
    k = int(wrong.sum())
    loss = report.columns.get("student_loss")
    loss = loss[noisy][known] if loss is not None else None
    realized = realized_transition(true, given, num_classes)
    return ReportSummary(
        base.n_samples, base.n_flagged, relabelled, report.decision, noise, realized,
        auroc=auroc(score[known], wrong), auroc_loss=auroc(loss, wrong) if loss is not None else None,
        precision_at_k=precision_at_k(score[known], wrong, k),
        precision_at_k_loss=precision_at_k(loss, wrong, k) if loss is not None else None, k=k,
        transition_mae=transition_mae(noise.transition, realized),
        corrected_accuracy=float((report.corrected[noisy][known] == true[known]).mean()),
        given_accuracy=float((~wrong).mean()),
    )  # fmt: skip


def write_label_report(report: LabelReport, path: str) -> str:
    """Write `label_report.csv` (module docstring)."""
    header = ["index"] + (["path"] if report.paths is not None else []) + ["split", "given_label", "true_label",
              "predicted_label", "confidence", *report.columns, "issue_score", "flagged", "corrected_label"]  # fmt: skip
    confidence = report.probs.max(1)
    names = name_columns(report.class_names, report.given, report.true, report.predicted, report.corrected)
    header += [f"{k}_name" for k in ("given", "true", "predicted", "corrected")] if names else []
    names = names or [[] for _ in report.index]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for r in range(len(report.index)):
            row: list[Any] = [int(report.index[r])]
            if report.paths is not None:
                row.append(report.paths[r])
            row += [report.split[r], int(report.given[r]), int(report.true[r]), int(report.predicted[r]),
                    f"{confidence[r]:.5f}"]  # fmt: skip
            row += [_cell(v[r]) for v in report.columns.values()]
            row += [repr(float(report.issue_score[r])), report.flag[r], int(report.corrected[r])]
            writer.writerow(row + names[r])
    return path


def write_probabilities(report: LabelReport, path: str) -> str:
    """Write `probabilities.npy`: float32 [rows, C], p̂(y | x) of every `label_report.csv` row in the same order (the
    posterior the report's candidate labels and noise estimate use; out-of-fold for a cross-fitted CE), for a
    user's own analysis of the same evidence (e.g. Confident Learning's tools, Northcutt et al. JAIR 2021)."""
    np.save(path, report.probs.astype(np.float32))
    return path


def _cell(value: float) -> str:
    if np.isnan(value):
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))  # full precision: no ties


def write_corrected_labels(report: LabelReport, datamodule: Any, path: str) -> str:
    """Write `corrected_labels.csv`: the given labels of the training list with the method's corrections of every
    untrusted label (the noisy part, and the validation hold-out when `val_labels: noisy`); trusted labels stay.

    File-backed data gets `path,label` rows relative to the data root (read back as a `folder_csv` train CSV);
    in-memory datasets get `index,label` rows for every index of the source's train set (`noise.kind: file`).
    """
    labels = np.asarray(datamodule.given_labels).astype(np.int64).copy()
    untrusted = report.part("noisy")
    if datamodule.hparams.val_labels == "noisy":  # a noisy hold-out is part of the data to clean
        untrusted |= report.part("val")
    labels[report.index[untrusted]] = report.corrected[untrusted]
    label = label_writer(datamodule.source)
    rows = datamodule.train_list_size
    paths = datamodule.train_set.paths
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        if paths is not None:
            root = str(getattr(datamodule.source, "root", ""))
            writer.writerow(["path", "label"])
            writer.writerows((os.path.relpath(paths[i], root) if root else paths[i], label(labels[i]))
                             for i in range(rows))  # fmt: skip
        else:
            writer.writerow(["index", "label"])
            writer.writerows((i, int(labels[i])) for i in range(rows))
    return path
