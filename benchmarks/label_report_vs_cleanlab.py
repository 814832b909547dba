"""lnl's label report against cleanlab (Confident Learning) on the same noisy Digits labels.

Not part of the package and not run by CI. cleanlab is AGPL-licensed: install it in a separate environment used
only for this measurement and run this script with that environment's Python; the script never imports lnl, it
runs the `lnl` executable (`--lnl`) and reads the run directories:

    python3 -m venv /tmp/cleanlab-venv && /tmp/cleanlab-venv/bin/pip install cleanlab scikit-learn
    /tmp/cleanlab-venv/bin/python benchmarks/label_report_vs_cleanlab.py --lnl .venv/bin/lnl --out bench_runs

For each noise setting (40 %/60 % symmetric, 40 % pairflip, 40 % instance) and seed (0-4; `seed_everything` =
`noise_seed` = `split_seed`), it fits DML (`configs/quickstart.yaml`) and CE (`configs/quickstart_ce.yaml`) with the
noise overridden (`--methods DML CE CE-CF` adds CE with its 5-fold cross-fitted report,
`configs/quickstart_ce_crossfit.yaml`; skipped when the run directory exists), reruns `lnl report` on the best checkpoint (`--report`:
a new `<run>/eval/report_<checkpoint>[_k]/` folder; the newest one is read, else the fit's own report),
and runs cleanlab as its documentation tells a user: 5-fold out-of-fold predicted probabilities from the
scikit-learn model with the best out-of-fold accuracy against the noisy labels (RBF SVC, logistic regression,
kNN), then `get_label_quality_scores` and `find_label_issues`, on the same images and noisy labels (the run's
noisy part; its validation hold-out is left to lnl's checkpoint choice). Metrics on the noisy part against the
true labels: issue-score AUROC, precision@K (K = the true number of wrong labels), corrected-label accuracy
(cleanlab: the out-of-fold prediction where `find_label_issues` flags a label, the given label elsewhere);
mean ± std over seeds and the paired difference to cleanlab ± its standard error.

`--same-probabilities` adds a second table: cleanlab's scores, flags and corrections computed from each lnl run's own
`probabilities.npy` (the posterior behind its report), so both sides share the network and differ only in the score
and the decisions; flags are also compared by their F1 against the wrong labels.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"sym40": ("symmetric", 0.4), "sym60": ("symmetric", 0.6), "pair40": ("pairflip", 0.4),
            "idn40": ("instance", 0.4)}  # fmt: skip
CONFIGS = {
    "DML": "configs/quickstart.yaml",
    "CE": "configs/quickstart_ce.yaml",
    "CE-CF": "configs/quickstart_ce_crossfit.yaml",
}  # CE-CF: CE with the 5-fold cross-fitted report


def run_dir(out: Path, method: str, setting: str, seed: int) -> Path:
    return out / f"{method.lower()}_{setting}_s{seed}" / "version_0"


def fit(lnl: str, out: Path, method: str, setting: str, seed: int) -> None:
    """One `lnl fit` of the quickstart config with the setting's noise and the seed (skipped if done)."""
    if run_dir(out, method, setting, seed).is_dir():  # done (or running: never a second version)
        return
    kind, rate = SETTINGS[setting]
    count = "sampled" if kind == "instance" else "exact"
    args = ["nice", "-n", "10", lnl, "fit", "--config", str(ROOT / CONFIGS[method]), f"--seed_everything={seed}",
            f"--data.init_args.noise_seed={seed}", f"--data.init_args.split_seed={seed}",
            f"--data.init_args.noise={{kind: {kind}, rate: {rate}, count: {count}}}",
            f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.logger.init_args.name={method.lower()}_{setting}_s{seed}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rereport(lnl: str, out: Path, method: str, setting: str, seed: int) -> None:
    """`lnl report` on the run's best checkpoint: the label report of the installed lnl, without a new fit."""
    directory = run_dir(out, method, setting, seed)
    best = json.loads((directory / "results.json").read_text())["best_checkpoint"]
    best = str(
        directory / "checkpoints" / Path(best).name
    )  # recorded relative to the fit's working directory
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([lnl, "report", best], check=True, env=env, stdout=subprocess.DEVNULL)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC, ties counted half."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_at_k(scores: np.ndarray, positive: np.ndarray, k: int) -> float:
    return float(positive[np.argsort(-scores, kind="mergesort")[:k]].mean())


def report_dir(directory: Path) -> Path:
    """The run's newest `lnl report` folder, else the run directory (the fit's own report)."""
    reports = sorted((directory / "eval").glob("report_*"), key=lambda p: p.stat().st_mtime)
    return reports[-1] if reports else directory


def lnl_metrics(directory: Path) -> dict[str, float]:
    """Metrics of a run's label_report.csv sorted by issue_score (what a user of the file gets)."""
    directory = report_dir(directory)
    rows = [r for r in read_rows(directory / "label_report.csv") if r["split"] == "noisy"]
    given = np.array([int(r["given_label"]) for r in rows])
    true = np.array([int(r["true_label"]) for r in rows])
    score = np.array([float(r["issue_score"]) for r in rows])
    corrected = np.array([int(r["corrected_label"]) for r in rows])
    wrong = given != true
    results = json.loads((directory / "results.json").read_text())
    flagged = np.array([r["flagged"] not in ("0", "", "no") for r in rows])
    return {"auroc": auroc(score, wrong), "p_at_k": precision_at_k(score, wrong, int(wrong.sum())),
            "corrected_acc": float((corrected == true).mean()), "given_acc": float((~wrong).mean()),
            "flag_f1": f1(flagged, wrong), "flagged": int(flagged.sum()), "relabelled": int((corrected != given).sum()),
            "estimated_wrong": results["report/noise_rate_estimate"] * len(rows),
            "results_auroc": results["report/auroc"]}  # fmt: skip


def f1(flagged: np.ndarray, wrong: np.ndarray) -> float:
    """F1 of the flags as a detector of the wrong labels."""
    hits = float((flagged & wrong).sum())
    return 2 * hits / max(float(flagged.sum() + wrong.sum()), 1.0)


def run_probabilities(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The noisy-part rows of a run's report: its `probabilities.npy`, given and true labels, issue scores."""
    directory = report_dir(directory)
    rows = read_rows(directory / "label_report.csv")
    noisy = np.array([r["split"] == "noisy" for r in rows])
    given, true, score = (np.array([float(r[k]) for r in rows])[noisy]
                          for k in ("given_label", "true_label", "issue_score"))  # fmt: skip
    probs = np.load(directory / "probabilities.npy")[noisy]
    return probs, given.astype(int), true.astype(int), score


def f1_at_count(score: np.ndarray, wrong: np.ndarray, count: int) -> float:
    """F1 of flagging the `count` highest issue scores: lnl's ranking with another count."""
    flagged = np.zeros(len(score), dtype=bool)
    flagged[np.argsort(-score, kind="stable")[:count]] = True
    return f1(flagged, wrong)


def confident_learning(given: np.ndarray, true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """cleanlab's scores, flags and corrections from `probs` as its documentation uses them: 1 −
    `get_label_quality_scores` ranks, `find_label_issues` flags, a flagged label becomes argmax `probs`."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    score = 1.0 - get_label_quality_scores(given, probs)
    issues = find_label_issues(given, probs)
    corrected = np.where(issues, probs.argmax(1), given)
    wrong = given != true
    return {"auroc": auroc(score, wrong), "p_at_k": precision_at_k(score, wrong, int(wrong.sum())),
            "corrected_acc": float((corrected == true).mean()), "given_acc": float((~wrong).mean()),
            "flag_f1": f1(issues, wrong), "flagged": int(issues.sum())}  # fmt: skip


def digits_train_images() -> np.ndarray:
    """The 1,437 Digits training images of lnl's `digits` source (its fixed stratified split), flattened."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    tr, _ = train_test_split(np.arange(len(d.images)), test_size=360, stratify=d.target, random_state=0)
    return d.data[np.sort(tr)] / 16.0


def cleanlab_metrics(directory: Path, seed: int, features: np.ndarray) -> dict[str, float | str]:
    """cleanlab on the run's noisy part: best-of-3 sklearn model by out-of-fold accuracy on the noisy labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    rows = [r for r in read_rows(directory / "labels.csv") if r["split"] == "noisy"]
    index = np.array([int(r["index"]) for r in rows])
    given = np.array([int(r["noisy_label"]) for r in rows])
    true = np.array([int(r["true_label"]) for r in rows])
    x = features[index]
    warnings.filterwarnings(
        "ignore", category=FutureWarning
    )  # SVC(probability=True), as cleanlab's docs use it
    models = {"svc_rbf": SVC(kernel="rbf", probability=True, random_state=seed),
              "logreg": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
              "knn": KNeighborsClassifier(n_neighbors=10)}  # fmt: skip
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    best_name, best_probs, best_acc = "", None, -1.0
    for name, model in models.items():
        probs = cross_val_predict(model, x, given, cv=cv, method="predict_proba")
        acc = float((probs.argmax(1) == given).mean())
        if acc > best_acc:
            best_name, best_probs, best_acc = name, probs, acc
    return confident_learning(given, true, best_probs) | {"model": best_name}


def mean_std(values: list[float]) -> str:
    a = np.asarray(values)
    return f"{a.mean():.4f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.4f}"


def paired(a: list[float], b: list[float]) -> str:
    d = np.asarray(a) - np.asarray(b)
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
    return f"{d.mean():+.4f} ± {se:.4f} ({int((d >= 0).sum())}/{len(d)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lnl", default=str(ROOT / ".venv/bin/lnl"), help="the lnl executable")
    parser.add_argument("--out", default="bench_runs", help="directory of the lnl runs")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=["DML", "CE"], choices=list(CONFIGS))
    parser.add_argument("--jobs", type=int, default=2, help="lnl fits in parallel")
    parser.add_argument("--report", action="store_true", help="rerun `lnl report` on every run first")
    parser.add_argument("--json", help="also write every per-run number here")
    parser.add_argument("--table-only", action="store_true", help="no fits: the table of the finished runs")
    parser.add_argument("--same-probabilities", action="store_true",
                        help="also run cleanlab on each lnl run's own probabilities.npy (its second table)")  # fmt: skip
    args = parser.parse_args()
    out = Path(args.out)
    jobs = [(m, s, seed) for seed in args.seeds for s in args.settings for m in args.methods]  # seed by seed
    jobs = [] if args.table_only else jobs
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda j: fit(args.lnl, out, *j), jobs))
        if args.report:
            list(pool.map(lambda j: rereport(args.lnl, out, *j), jobs))
    features = digits_train_images()
    per_run: dict[str, dict] = {}
    for setting in args.settings:
        for seed in args.seeds:
            key = f"{setting}_s{seed}"
            first = run_dir(out, args.methods[0], setting, seed)
            per_run[key] = {"cleanlab": cleanlab_metrics(first, seed, features)}
            for m in args.methods:
                directory = run_dir(out, m, setting, seed)
                if (directory / "labels.csv").read_bytes() != (first / "labels.csv").read_bytes():
                    sys.exit(f"{directory}: labels differ from {first}")
                per_run[key][m] = lnl_metrics(directory)
                if args.same_probabilities:
                    probs, given, true, score = run_probabilities(directory)
                    cleanlab = confident_learning(given, true, probs)
                    per_run[key][f"{m} probabilities"] = cleanlab
                    per_run[key][m]["flag_f1_at_cleanlab_count"] = f1_at_count(
                        score, given != true, cleanlab["flagged"]
                    )
    if args.json:
        Path(args.json).write_text(json.dumps(per_run, indent=1))
    print_end_to_end(per_run, args.settings, args.seeds, args.methods)
    if args.same_probabilities:
        print_same_probabilities(per_run, args.settings, args.seeds, args.methods)
    return 0


def metric_cells(
    runs: list[dict], name: str, metrics: tuple[str, ...], baseline: Callable | None
) -> list[str]:
    """Mean ± std of each metric of `name` over the runs and its paired difference to `baseline(run, metric)`
    ("—" without a baseline)."""
    cells = []
    for metric in metrics:
        values = [r[name][metric] for r in runs]
        difference = "—" if baseline is None else paired(values, [baseline(r, metric) for r in runs])
        cells += [mean_std(values), difference]
    return cells


def print_end_to_end(
    per_run: dict[str, dict], settings: list[str], seeds: list[int], methods: list[str]
) -> None:
    """The README's first table: each lnl report against cleanlab with its own best scikit-learn model."""
    names = [*methods, "cleanlab"]
    print("| noise | method | issue-score AUROC | Δ vs cleanlab | precision@K | Δ vs cleanlab | corrected labels "
          "right | Δ vs cleanlab | flagged / estimated wrong |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for setting in settings:
        runs = [per_run[f"{setting}_s{seed}"] for seed in seeds]
        for name in names:
            versus_cleanlab = None if name == "cleanlab" else lambda r, m: r["cleanlab"][m]
            cells = metric_cells(runs, name, ("auroc", "p_at_k", "corrected_acc"), versus_cleanlab)
            if name == "cleanlab":
                models = sorted({r["cleanlab"]["model"] for r in runs})
                extra = f"{np.mean([r[name]['flagged'] for r in runs]):.0f} flagged ({', '.join(models)})"
            else:
                ratio = [r[name]["flagged"] / max(r[name]["estimated_wrong"], 1e-9) for r in runs]
                extra = f"{min(ratio):.2f}-{max(ratio):.2f}"
            print(f"| {setting} | {name} | " + " | ".join(cells) + f" | {extra} |")
        given = np.mean([r["cleanlab"]["given_acc"] for r in runs])
        print(f"| {setting} | given labels | | | | | {given:.3f} | | |")


def print_same_probabilities(per_run: dict[str, dict], settings: list[str], seeds: list[int],
                             methods: list[str]) -> None:  # fmt: skip
    """The README's second table: each lnl report against cleanlab run on that report's own probabilities.npy
    (same posterior, so the difference is the score, the flags and the corrections)."""
    print("\n| noise | method | issue-score AUROC | Δ vs cleanlab, same probabilities | precision@K | Δ | flags' F1 "
          "| Δ | F1 at cleanlab's count | Δ | corrected labels right | Δ |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for setting in settings:
        runs = [per_run[f"{setting}_s{seed}"] for seed in seeds]
        for name in methods:
            metrics = ("auroc", "p_at_k", "flag_f1", "flag_f1_at_cleanlab_count", "corrected_acc")
            cells = metric_cells(runs, name, metrics,
                                 lambda r, m, name=name: r[f"{name} probabilities"][m.removesuffix("_at_cleanlab_count")])  # fmt: skip
            print(f"| {setting} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
