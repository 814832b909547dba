"""What every data source shares: `ImageSet` (images and labels of one part), `DataSource` and the registry.

Sources register under a name (`register_source`) and are built by `lnl.data.sources.create_source`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from lnl.errors import ConfigError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class ImageSet:
    """Images with the labels this part carries (int64) and true labels (-1 = unknown).

    Exactly one of ``images`` (uint8 [N, H, W, C], in memory) or ``paths`` (files, opened as RGB) is set.
    """

    labels: np.ndarray
    true_labels: np.ndarray
    images: np.ndarray | None = None
    paths: list[str] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.true_labels = np.asarray(self.true_labels, dtype=np.int64).reshape(-1)
        if (self.images is None) == (self.paths is None):
            raise ValueError("ImageSet needs exactly one of images / paths")
        n = len(self.images) if self.images is not None else len(self.paths)
        if not len(self.labels) == len(self.true_labels) == n:
            raise ValueError(f"ImageSet: {n} images, {len(self.labels)} labels, {len(self.true_labels)} true")

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        """Sample ``i`` as a PIL image: RGB, or "L" for 1-channel arrays."""
        if self.images is None:
            with Image.open(self.paths[i]) as im:
                return im.convert("RGB")
        a = self.images[i]
        return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)

    def raw_features(self, indices=None) -> np.ndarray:
        """Flattened CHW pixels scaled to [0, 1], float32 [n, C*H*W]: the IDN features of Xia et al. 2020."""
        if self.images is None:
            raise ConfigError(
                "noise.features = raw: needs in-memory images (CIFAR, Digits); file-backed datasets "
                "(Clothing1M, folder_csv) have no pixel matrix for instance-dependent noise"
            )
        x = self.images if indices is None else self.images[np.asarray(indices, dtype=np.int64)]
        return x.transpose(0, 3, 1, 2).reshape(len(x), -1).astype(np.float32) / np.float32(255.0)

    def subset(self, indices) -> ImageSet:
        """The samples at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        imgs = self.images[idx] if self.images is not None else None
        paths = [self.paths[i] for i in idx] if self.paths is not None else None
        return ImageSet(self.labels[idx], self.true_labels[idx], images=imgs, paths=paths)


class DataSource:
    """Base of all sources: subclasses set the attributes and implement ``train()`` / ``test()``."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = "generic"  # transforms family: "cifar" | "clothing" | "digits" | "generic"
    num_classes: int
    in_chans: int = 3
    image_size: int = 32
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in range(self.num_classes)]

    def train(self) -> ImageSet:
        raise NotImplementedError

    def test(self) -> ImageSet:
        raise NotImplementedError

    def asymmetric_map(self) -> np.ndarray | None:
        """Class map for ``noise.kind: asymmetric`` (None: the kind is not defined for this source)."""
        return None

    def predefined_parts(self) -> dict[str, ImageSet] | None:
        """{"noisy", "clean", "val"} when the dataset fixes them; None: the data module splits ``train()``."""
        return None


SOURCES: dict[str, type[DataSource]] = {}


def register_source(name: str):
    """Class decorator registering a DataSource under ``name`` for :func:`create_source`."""

    def deco(cls: type[DataSource]) -> type[DataSource]:
        cls.name = name
        SOURCES[name] = cls
        return cls

    return deco


def root_dir(root, what: str, hint: str) -> Path:
    """`root` as a Path; ConfigError saying what needs it when it is not a directory."""
    if root is None or not Path(root).expanduser().is_dir():
        raise ConfigError(f"data root = {root}: directory not found; {what} needs {hint}")
    return Path(root).expanduser()
