"""What DML's selection is doing, per step and per epoch (the DML paper's Fig. 3(e), 4(c) and 5).

Per step: losses, h, |𝒮|/B, R(c) mean/min/max, the UDA mask rate and, when true labels are known, the batch's
selection precision (the paper's "estimated accuracy" = # clean / # selected) and recall. Per epoch: R(c) of
every group, and with true labels the epoch's selection precision and recall, the ranking AUROC of the bank's
scores (`train/bank_auroc`: do wrong labels score higher?), each group's true clean share (the
share of its samples whose given label is right) and the mean |R(c) − clean share| over groups. True labels are
used for these numbers only, never for training. The history is kept in checkpoints and drawn at the end of a fit
as `dml_selection.png` in the run directory (and logged as a W&B image when W&B logs).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from lnl.methods.base import has_true_labels
from lnl.methods.selection import selection_counts
from lnl.report.estimates import auroc

FIGURE_NAME = "dml_selection.png"
# epoch-level keys whose values are reduced over ranks by hand before logging (equal on every rank): Lightning's
# advice to log them with `sync_dist=True` does not apply (`lnl.run.console.silence_presynced_advice`)
PRESYNCED_EPOCH_KEYS = r"train/(h_epoch|R_c\d+|R_err|sel_(precision|recall)_epoch|clean_rate|clean_share_c\d+|evidence_[tf]pr|bank_auroc)"


def bank_auroc(selector: Any, flag: Tensor) -> float:
    """How well the bank's scores rank the labels: AUROC of the EMA score for "label is wrong" over the samples
    seen with known truth (`flag`: 1 right, 0 wrong, −1 unknown); 1 = every wrong label scores above every right one.
    """
    seen = (flag >= 0) & (selector.bank_labels[: flag.numel()] >= 0)
    scores = selector.bank[: flag.numel()][seen].double().cpu().numpy()
    return auroc(scores, (flag[seen] == 0).cpu().numpy())


class SelectionDiagnostics:
    """Sync-free accumulators of DML's selection quality; `history` holds one record (dict of floats) per epoch."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.history: list[dict[str, Any]] = []
        self.sel: Tensor | None = None  # [selected known, selected clean, clean] over the epoch
        self.groups: Tensor | None = None  # [2, C]: known samples per group, clean ones per group
        self.clean_flag: Tensor | None = None  # per sample index: 1 right label, 0 wrong, -1 unknown/unseen

    def reset(self) -> None:
        self.sel = self.groups = None

    def log_step(self, module: Any, loss_s, loss_t, h, counts, mask, nb, groups, uda_rate) -> None:  # noqa: ANN001
        """Per-step scalars (names kept stable for dashboards) and the epoch accumulators; `uda_rate` is the
        share of 𝒰 whose teacher confidence passes the UDA threshold (`train/uda_mask`)."""
        r = module.selector.current_ratio(module.current_epoch)
        logs = {"loss_student": loss_s, "loss_teacher": loss_t, "h": h, "selected_frac": counts[0] / counts.sum(),
                "R_mean": r.mean(), "R_min": r.min(), "R_max": r.max(),
                "uda_mask": uda_rate}  # fmt: skip
        if has_true_labels(nb):
            y, y_true = nb.y, nb.y_true
            c = selection_counts(mask, y, y_true)
            self.sel = c if self.sel is None else self.sel + c
            known = (y_true >= 0).float()
            g = torch.zeros(2, self.num_classes, device=y.device)
            g[0].index_add_(0, groups, known)
            g[1].index_add_(0, groups, known * (y == y_true).float())
            self.groups = g if self.groups is None else self.groups + g
            bank = module.selector.evidence
            if self.clean_flag is None or self.clean_flag.numel() != bank.numel():
                self.clean_flag = torch.full_like(bank, -1.0)
            self.clean_flag[nb.index] = torch.where(y_true >= 0, (y == y_true).float(), -1.0)
            c = module.all_reduce_mean(c)
            logs |= {"sel_precision": c[1] / c[0].clamp_min(1e-9), "sel_recall": c[1] / c[2].clamp_min(1e-9)}
        logs = {f"train/{k}": v.detach().float() for k, v in logs.items()}
        n = nb.y.shape[0]
        module.log_dict(logs, on_step=True, on_epoch=False, batch_size=n)
        module.log("train/h_epoch", h.float(), on_step=False, on_epoch=True, batch_size=n)

    def log_epoch(self, module: Any) -> None:
        """R(c) of the epoch; with true labels: precision, recall, clean shares, mean |R(c) − share|."""
        r = module.selector.current_ratio(module.current_epoch).float()
        logs = {f"train/R_c{c:03d}": r[c] for c in range(self.num_classes)}
        record: dict[str, Any] = {"epoch": int(module.current_epoch), "R": r.tolist()}
        if self.sel is not None and self.groups is not None:
            sel, g = module.all_reduce_mean(self.sel), module.all_reduce_mean(self.groups)
            has = g[0] > 0
            share = torch.where(has, g[1] / g[0].clamp_min(1e-9), torch.full_like(g[0], float("nan")))
            err = (r.to(share.device) - share).abs()[has].mean()
            precision, recall = sel[1] / sel[0].clamp_min(1e-9), sel[1] / sel[2].clamp_min(1e-9)
            logs |= {"train/sel_precision_epoch": precision, "train/sel_recall_epoch": recall,
                     "train/R_err": err, "train/clean_rate": g[1].sum() / g[0].sum().clamp_min(1e-9)}  # fmt: skip
            logs |= {f"train/clean_share_c{c:03d}": share[c] for c in range(self.num_classes) if bool(has[c])}
            if self.clean_flag is not None:
                ev, seen = module.selector.evidence, module.selector.evidence_seen
                flag = self.clean_flag[: ev.numel()]
                tpr = ((ev > 0) & seen & (flag == 1)).sum() / ((flag == 1) & seen).sum().clamp_min(1)
                fpr = ((ev > 0) & seen & (flag == 0)).sum() / ((flag == 0) & seen).sum().clamp_min(1)
                logs |= {"train/evidence_tpr": tpr, "train/evidence_fpr": fpr}
                record["bank_auroc"] = bank_auroc(module.selector, flag)
                logs["train/bank_auroc"] = torch.tensor(record["bank_auroc"])
            record |= {"precision": float(precision), "recall": float(recall), "R_err": float(err),
                       "clean_rate": float(logs["train/clean_rate"]), "share": share.tolist()}  # fmt: skip
        module.log_dict({k: v.float() for k, v in logs.items()}, on_step=False, on_epoch=True)
        self.history.append(record)

    def save_figure(self, module: Any) -> str | None:
        """Draw the history as `dml_selection.png` in the run directory (rank 0); log it to W&B if present."""
        trainer = module.trainer
        if trainer.logger is None or not self.history:
            return None
        run_dir = trainer.log_dir  # a collective call under DDP: every rank asks
        if not trainer.is_global_zero or run_dir is None:
            return None
        from lnl.plots import plot_dml_selection

        path = os.path.join(run_dir, FIGURE_NAME)
        source = getattr(trainer.datamodule, "source", None)
        plot_dml_selection(self.history, path, getattr(source, "class_names", None))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="dml/selection", images=[path])
        return path
