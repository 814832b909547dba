"""A user's image folder made from scikit-learn's Digits: 32-px RGB PNGs, a `train.csv` with some labels wrong,
and the truth kept aside (to measure what lnl's label report and corrected labels do on one's own data)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class DigitsFolder:
    """Where the folder is, and per row of train.csv the true and the written (given) class id."""

    root: Path
    paths: list[str]
    true: np.ndarray
    given: np.ndarray


def write_digits_folder(root: Path | str, n: int, noise: float = 0.3, seed: int = 0, size: int = 32,
                        names: bool = False, classes: int = 10) -> DigitsFolder:  # fmt: skip
    """`n` Digits images of the digits 0..classes-1 (drawn at random without replacement) as `images/<i>.png` (`size` px, RGB) and a
    `path,label` CSV with exactly round(noise * n) labels moved to another class (uniformly); `names` writes the
    labels as class names ("zero" .. "nine") instead of ids."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.choice(np.flatnonzero(digits.target < classes), size=n, replace=False)
    true = digits.target[pick].astype(np.int64)
    given = true.copy()
    wrong = rng.choice(n, size=round(noise * n), replace=False)
    given[wrong] = (true[wrong] + rng.integers(1, classes, size=len(wrong))) % classes
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for i, j in enumerate(pick):
        pixels = np.rint(digits.images[j] * (255.0 / 16.0)).astype(np.uint8)
        rel = f"images/{i:04d}.png"
        Image.fromarray(pixels).resize((size, size), Image.BILINEAR).convert("RGB").save(root / rel)
        paths.append(rel)
    with (root / "train.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows((p, NAMES[g] if names else int(g)) for p, g in zip(paths, given))
    return DigitsFolder(root, paths, true, given)


def read_labels(path: Path | str) -> dict[str, str]:
    """path -> label (as written) of a `path,label` CSV with a header."""
    with Path(path).open(newline="") as f:
        return {row["path"]: row["label"] for row in csv.DictReader(f)}
