"""The end of `lnl fit`: test of the last and best-val checkpoints, the run's report files and `results.json`, and
the short summary printed for the user (docs/design.md, "Layout")."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from lnl.data.seed import run_seed
from lnl.run import preflight
from lnl.run.fit_report import publish_to_wandb, write_run_report
from lnl.run.paper_protocol import paper_protocol_results
from lnl.run.watchdog import beat


def finish_fit(trainer: Trainer, model: LightningModule, datamodule: Any, run_root: str) -> None:
    """After a fit that was not interrupted: test the last and best-val weights, write the run's report files and
    `results.json` into its run directory (rank 0), print the summary and close the W&B run."""
    if trainer.interrupted or trainer.state.status.value == "interrupted":
        return
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None and checkpoint.monitor else ""
    last = best = None
    if datamodule.has_test_set:  # metric rows say which checkpoint they came from
        beat("after fit: test of the last weights")
        model.metric_suffix = "_last"
        last = trainer.test(model, datamodule=datamodule, verbose=False)
        model.metric_suffix = "_best_val"
        if best_path:  # loads the best-val weights into `model`
            beat("after fit: test of the best-val checkpoint")
            best = trainer.test(model, datamodule=datamodule, ckpt_path=best_path, verbose=False)
        model.metric_suffix = ""
    elif best_path:
        beat("after fit: loading the best-val checkpoint")
        model.restore(preflight.read_checkpoint(best_path))
    best_score = checkpoint.best_model_score if checkpoint is not None else None
    data = datamodule.record()
    results = {
        **_test_metrics(last),
        **_test_metrics(best),
        "val/acc_best": float(best_score) if best_score is not None else None,
        "train/skipped_nonfinite": model.skipped_nonfinite,
        "noise/realized_rate": data.realized_rate,
        "method": type(model).__name__,
        "dataset": data.dataset,
        "noise": data.noise,
        "seed": run_seed(-1),
        "noise_seed": data.noise_seed,
        "split_seed": data.split_seed,
        "labels_sha256": data.labels_sha256,
        "clean_budget": data.clean_budget,
        "best_checkpoint": best_path,
    }
    results.setdefault("test/acc_best_val", None)
    results |= paper_protocol_results(trainer)  # an official script's number, beside (never instead of) ours
    run_dir = trainer.log_dir or run_root  # a collective call under DDP: every rank asks
    if trainer.is_global_zero:
        report = write_run_report(trainer, model, datamodule, run_dir, "best_val" if best_path else "last")
        results |= report.results
        results = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in results.items()}
        results_path = os.path.join(run_dir, "results.json")
        with open(results_path, "w") as f:
            json.dump(results, f, indent=2, default=str)
        files = [os.path.join(run_dir, "labels.csv"), *report.files, results_path]
        beat("after fit: W&B upload")
        publish_to_wandb(trainer, results, report.pictures, files)
        print(summary(results, run_dir), flush=True)  # a log file sees it now, not only at exit
    for logger in trainer.loggers:  # flush and close the W&B run: the fit is complete
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            beat("after fit: closing the W&B run")
            logger.experiment.finish()


def _test_metrics(outputs: list[dict[str, float]] | None) -> dict[str, float]:
    """The `test/...` metrics of `trainer.test` outputs (already tagged with their checkpoint)."""
    return {k: float(v) for k, v in (outputs[0] if outputs else {}).items() if k.startswith("test/")}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summary(results: dict[str, Any], run_dir: str) -> str:
    """A short human summary of a finished run."""
    noise = results["noise"]
    realized = results["noise/realized_rate"]
    if noise["kind"] == "none":  # nothing added: the source's own labels (Clothing1M, your folder_csv)
        labels = "labels as given" + (
            "" if realized is None else f" (wrong among known truths {_fmt(realized)})"
        )
    else:
        labels = f"{noise['tag']} noise (realized rate {_fmt(realized)})"
    lines = [
        f"\nlnl: {results['method']} on {results['dataset']} with {labels}",
        f"  test acc (best val ckpt) {_fmt(results['test/acc_best_val'])} | "
        f"test acc (last) {_fmt(results.get('test/acc_last'))} | best val acc {_fmt(results['val/acc_best'])}",
    ]
    if "report/n_flagged" in results:
        line = (
            f"  label report: {results['report/n_flagged']} of {results['report/n_samples']} noisy-part labels "
            f"flagged, estimated noise rate {_fmt(results.get('report/noise_rate_corroborated'))} "
            f"(Confident Learning alone {_fmt(results['report/noise_rate_estimate'])})"
        )
        if results.get("report/auroc") is not None:
            line += f", issue-score AUROC {_fmt(results['report/auroc'])}"
        lines.append(line + " (label_report.csv, corrected_labels.csv)")
        lines.append(f"  corrected labels: {results.get('report/decision', '')}")
    lines.append(f"  run directory: {run_dir}\n")
    return "\n".join(lines)
