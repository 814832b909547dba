"""Can a network trained with CE judge pairflip-noisy Digits labels as well as cleanlab's RBF SVC? (README, "The
same comparison on the same probabilities").

Not part of the package and not run by CI; runs in lnl's environment (torch, scikit-learn). It reads the noisy and
true labels of one finished run of `benchmarks/label_report_vs_cleanlab.py` (its `labels.csv`) and, on that run's
noisy part:

- trains 5-fold out-of-fold networks with CE for each recipe of a grid (backbone x learning rate x weight decay x
  label smoothing x epochs; SGD momentum 0.9, batch 64, ±1-pixel random shifts, LR x 0.1 after 2/3 of the epochs)
  and reports, at the epoch with the best out-of-fold accuracy on the *noisy* labels (how cleanlab picks its
  model), the accuracy against the true labels and the AUROC of 1 − p(ỹ | x) and of its mean over epochs;
- fits 5-fold out-of-fold scikit-learn models (RBF SVC, logistic regression, 10-NN) on the pixels and on the
  penultimate features of one CE network trained on all noisy labels, after 3, 10 and 30 epochs.

    .venv/bin/python benchmarks/ce_network_vs_svc.py --run bench_runs/ce_pair40_s0/version_0 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import itertools
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC
from torch import nn

from lnl.models.backbones import digits_cnn
from lnl.report.estimates import auroc

BACKBONES = {
    "digits_cnn": digits_cnn,  # lnl's quickstart backbone: global average pooling, linear head
    "cnn_flat": lambda: nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                      nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1024, 10)),
    "mlp256": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)),
}  # fmt: skip
RECIPES = [  # (backbone, lr, weight decay, label smoothing, epochs); the first is the quickstart's CE
    ("digits_cnn", 0.05, 5e-4, 0.0, 30), ("digits_cnn", 0.01, 5e-4, 0.0, 30), ("digits_cnn", 0.1, 5e-4, 0.0, 30),
    ("digits_cnn", 0.05, 5e-3, 0.0, 30), ("digits_cnn", 0.05, 2e-2, 0.0, 30), ("digits_cnn", 0.05, 5e-2, 0.0, 30),
    ("digits_cnn", 0.05, 5e-4, 0.0, 100), ("digits_cnn", 0.05, 5e-4, 0.5, 30), ("digits_cnn", 0.05, 5e-3, 0.5, 30),
    ("cnn_flat", 0.05, 5e-4, 0.0, 30), ("cnn_flat", 0.01, 5e-4, 0.0, 30),
    ("mlp256", 0.05, 5e-4, 0.0, 30), ("mlp256", 0.01, 5e-4, 0.0, 30),
]  # fmt: skip


def noisy_part(run: Path) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Images (standardized, [n, 1, 8, 8]), noisy labels and true labels of the run's noisy part."""
    d = load_digits()
    train, _ = train_test_split(np.arange(len(d.images)), test_size=360, stratify=d.target, random_state=0)
    images = torch.tensor(d.images[np.sort(train)] / 16.0, dtype=torch.float32)[:, None]
    rows = [r for r in csv.DictReader((run / "labels.csv").open()) if r["split"] == "noisy"]
    index = np.array([int(r["index"]) for r in rows])
    given = torch.tensor([int(r["noisy_label"]) for r in rows])
    return (images[index] - 0.3) / 0.4, given, np.array([int(r["true_label"]) for r in rows])


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: tuple, on_epoch=None) -> None:
    """SGD with CE on (x, y); `on_epoch(epoch, net)` after each epoch."""
    _, lr, wd, smoothing, epochs = recipe
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    schedule = torch.optim.lr_scheduler.MultiStepLR(opt, [int(epochs * 2 / 3)], 0.1)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            i, j = np.random.randint(0, 3, 2)
            xb = F.pad(x[batch], (1, 1, 1, 1))[:, :, i : i + 8, j : j + 8]
            loss = F.cross_entropy(net(xb), y[batch], label_smoothing=smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
        schedule.step()
        if on_epoch is not None:
            net.eval()
            with torch.no_grad():
                on_epoch(epoch, net)


def out_of_fold_recipe(x: torch.Tensor, y: torch.Tensor, true: np.ndarray, recipe: tuple, seed: int) -> str:
    """One recipe's 5-fold out-of-fold networks: numbers at the epoch with the best noisy-label accuracy."""
    epochs = recipe[-1]
    fold = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)) % 5
    probs = torch.zeros(epochs, len(x), 10)
    for k in range(5):
        torch.manual_seed(10 * seed + k)
        held = (fold == k).nonzero().squeeze(1)

        def record(epoch: int, net: nn.Module, held: torch.Tensor = held) -> None:
            probs[epoch, held] = F.softmax(net(x[held]), -1)

        train(BACKBONES[recipe[0]](), x[fold != k], y[fold != k], recipe, record)
    wrong = y.numpy() != true
    given_p = probs.gather(2, y[None, :, None].expand(epochs, -1, 1)).squeeze(2)
    noisy_acc = (probs.argmax(2) == y).float().mean(1)
    best = int(noisy_acc.argmax())
    mean_p = given_p[: best + 1].mean(0)
    return (f"{recipe}: best epoch {best + 1}, out-of-fold accuracy noisy {noisy_acc[best]:.3f} true "
            f"{(probs[best].argmax(1).numpy() == true).mean():.3f}, AUROC 1 - p {auroc(-given_p[best].numpy(), wrong):.3f}"
            f", mean over epochs {auroc(-mean_p.numpy(), wrong):.3f}")  # fmt: skip


def sklearn_heads(x: torch.Tensor, y: torch.Tensor, true: np.ndarray, seed: int) -> list[str]:
    """Out-of-fold scikit-learn models on pixels and on a CE network's penultimate features (3, 10, 30 epochs)."""
    warnings.filterwarnings("ignore")
    features = {"pixels": x.reshape(len(x), -1).numpy()}
    torch.manual_seed(seed)
    net = digits_cnn()

    def keep(epoch: int, net: nn.Module) -> None:
        if epoch + 1 in (3, 10, 30):
            features[f"CE features, epoch {epoch + 1}"] = net.forward_head(
                net.forward_features(x), pre_logits=True
            ).numpy()

    train(net, x, y, RECIPES[0], keep)
    given, wrong = y.numpy(), y.numpy() != true
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    models = {"svc_rbf": lambda: SVC(probability=True, random_state=seed),
              "logreg": lambda: LogisticRegression(max_iter=2000), "knn10": lambda: KNeighborsClassifier(10)}  # fmt: skip
    lines = []
    for (name, f), (model, make) in itertools.product(features.items(), models.items()):
        p = cross_val_predict(make(), f, given, cv=cv, method="predict_proba")
        lines.append(f"{name}, {model}: out-of-fold accuracy noisy {(p.argmax(1) == given).mean():.3f} true "
                     f"{(p.argmax(1) == true).mean():.3f}, AUROC 1 - p {auroc(-p[np.arange(len(p)), given], wrong):.3f}")  # fmt: skip
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", required=True, help="a run directory with labels.csv (e.g. .../ce_pair40_s0/version_0)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    np.random.seed(args.seed)
    x, y, true = noisy_part(Path(args.run))
    for line in sklearn_heads(x, y, true, args.seed):
        print(line, flush=True)
    for recipe in RECIPES:
        print(out_of_fold_recipe(x, y, true, recipe, args.seed), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
