"""Images without a training role: a folder or a CSV of paths, for `lnl predict` on new data."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from lnl.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def list_new_images(location: str) -> list[str]:
    """Paths of the images under a folder (recursive, sorted) or listed in the first column of a CSV (relative
    paths resolve against the CSV's folder; an optional header row is skipped)."""
    place = Path(location)
    if place.is_dir():
        paths = sorted(str(p) for p in place.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    elif place.is_file() and place.suffix.lower() == ".csv":
        with place.open(newline="") as f:
            rows = [r for r in csv.reader(f) if r and r[0].strip()]
        if rows and Path(rows[0][0].strip()).suffix.lower() not in IMAGE_SUFFIXES:
            rows = rows[1:]  # header
        paths = [str(place.parent / r[0].strip()) for r in rows]
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise ConfigError(f"data.predict_images = {location}: {len(missing)} listed images are missing "
                              f"(first: {missing[0]})")  # fmt: skip
    else:
        raise ConfigError(f"data.predict_images = {location}: not a folder or a .csv file of image paths")
    if not paths:
        raise ConfigError(f"data.predict_images = {location}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return paths


class NewImages(Dataset):
    """Items {x, index, path} of image files opened in the model's colour mode and passed through `transform`."""

    def __init__(self, paths: list[str], transform: Callable, mode: str = "RGB") -> None:
        self.paths, self.transform, self.mode = paths, transform, mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        with Image.open(self.paths[index]) as image:
            return {"x": self.transform(image.convert(self.mode)), "index": index, "path": self.paths[index]}
