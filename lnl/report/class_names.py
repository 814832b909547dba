"""Class names next to class ids in the run's files: `classes.csv`, the `*_name` columns, labels written back in
the form they were given (class names in, class names out)."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

CLASSES_FILE = "classes.csv"


def write_classes(names: Sequence[str], directory: str) -> str:
    """`classes.csv`: one `id,name` row per class (the ids every other file of the run uses)."""
    path = os.path.join(directory, CLASSES_FILE)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "name"])
        writer.writerows(enumerate(names))
    return path


def name_of(names: Sequence[str] | None, label: int) -> str:
    """The name of class id `label` ("" for an unknown label −1 or without names)."""
    return names[label] if names is not None and 0 <= label < len(names) else ""


def name_columns(names: Sequence[str] | None, *labels: np.ndarray) -> list[list[str]] | None:
    """Per row, the names of each of the `labels` arrays' class ids (None without names)."""
    if names is None:
        return None
    return [[name_of(names, int(y[r])) for y in labels] for r in range(len(labels[0]))] if labels else []


def label_writer(source: Any) -> Callable[[int], Any]:
    """How a label is written back into a train CSV: as its class name when the source's labels were names."""
    names = getattr(source, "label_names", None)
    if names is None:
        return int
    return lambda label: names[int(label)]
