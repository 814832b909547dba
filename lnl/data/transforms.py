"""Train / eval pipelines per dataset family: PIL image -> normalized float32 tensor [C, H, W].

All randomness comes from torch's global RNG (torchvision draws with ``torch.rand`` / ``torch.randint``),
which the data module seeds per (seed, epoch, index) around each call: augmentations are reproducible and
independent of the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from lnl.errors import ConfigError
from lnl.validation import registered

FAMILIES = ("cifar", "clothing", "digits", "generic")


@dataclass(frozen=True)
class Transforms:
    """The four pipelines of a dataset family: ``weak`` (noisy set), ``strong`` (weak + RandAugment,
    UDA-style), ``clean_autoaugment`` (weak + AutoAugment: EMLC's clean set) and ``eval`` (deterministic)."""

    weak: Callable[[Image.Image], torch.Tensor]
    strong: Callable[[Image.Image], torch.Tensor]
    clean_autoaugment: Callable[[Image.Image], torch.Tensor]
    eval: Callable[[Image.Image], torch.Tensor]

    def get(self, view: str) -> Callable[[Image.Image], torch.Tensor]:
        """Pipeline by view name: "weak", "strong", "autoaugment" (= clean_autoaugment) or "eval".

        The loaders look every view up by the name a method's `train_views` / `clean_augment` gives it
        ("autoaugment" names the `clean_autoaugment` field)."""
        names = {
            "weak": self.weak,
            "strong": self.strong,
            "autoaugment": self.clean_autoaugment,
            "eval": self.eval,
        }
        return registered("view", view, names)


class ToNormalizedTensor:
    """PIL image -> float32 tensor [C, H, W] = ``(x / 255 - mean) / std``: ToTensor + Normalize in one
    numpy pass (3x faster on CIFAR-sized images)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = tuple(mean), tuple(std)
        mean, std = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
        self.scale, self.shift = (1.0 / (255.0 * std)).reshape(1, 1, -1), (mean / std).reshape(1, 1, -1)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        a = np.asarray(img, dtype=np.float32)
        a = a[..., None] if a.ndim == 2 else a
        if a.shape[-1] != self.scale.shape[-1]:
            raise ConfigError(
                f"image has {a.shape[-1]} channels; the normalization expects {self.scale.shape[-1]}"
            )
        return torch.from_numpy(np.ascontiguousarray((a * self.scale - self.shift).transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


class Cutout:
    """Zero (= the mean, after normalization) a ``size`` x ``size`` square centred uniformly at random,
    clipped at the borders (DeVries & Taylor 2017; applied after RandAugment in UDA's CIFAR pipeline)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        cy, cx = int(torch.randint(h, (1,))), int(torch.randint(w, (1,)))
        y0, x0 = cy - self.size // 2, cx - self.size // 2
        y1, x1 = y0 + self.size, x0 + self.size
        y0, x0 = max(y0, 0), max(x0, 0)
        x = x.clone()
        x[..., y0:y1, x0:x1] = 0.0
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class DigitsRandAugment(T.RandAugment):
    """torchvision's RandAugment without Solarize (it inverts an 8x8 digit's saturated strokes, erasing it)
    and Color (a no-op on 1 channel); same sampling from torch's RNG."""

    def _augmentation_space(self, num_bins: int, image_size: tuple[int, int]) -> dict:
        space = super()._augmentation_space(num_bins, image_size)
        return {k: v for k, v in space.items() if k not in ("Solarize", "Color")}


def build_transforms(
    family: str,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int,
    padding_mode: str = "constant",
) -> Transforms:
    """Pipelines for ``family`` ("cifar" | "clothing" | "digits" | "generic").

    - cifar: weak = RandomCrop(size, pad size/8 = 4) + HorizontalFlip; strong = weak + RandAugment(2 ops,
      magnitude 9/31) + Cutout(size/2) (UDA: Xie et al., NeurIPS 2020, arXiv:1904.12848); clean = weak +
      AutoAugment(CIFAR10 policy) (EMLC, arXiv:2305.12961, §3.6 and Table 4); eval = normalize.
    - clothing / generic (ImageNet-style; 224 for Clothing1M): weak = Resize(size*256/224) +
      RandomCrop(size) + flip; eval = Resize + CenterCrop (cf. the DML paper's Clothing1M test crop, §5.1);
      strong = weak + RandAugment(2, 9); clean = weak + AutoAugment(ImageNet policy) (EMLC Table 4).
    - digits (8x8, 1 channel): weak = RandomCrop(size, padding=1), no flip (digits are not flip-invariant);
      strong = weak + :class:`DigitsRandAugment` (2 ops, magnitude 9/31: 1 px translation, +-9 deg rotation,
      shear 0.09, +-27% brightness/contrast/sharpness, 7-bit posterize, autocontrast, equalize), mild enough
      for a digit to stay legible at 8x8; clean = weak (AutoAugment's policies are tuned for natural images);
      eval = normalize.

    `padding_mode` ("constant" | "reflect") is the padding of the random crops (cifar, digits).
    """
    registered("transforms family", family, dict.fromkeys(FAMILIES))
    if len(mean) != len(std):
        raise ConfigError(f"mean = {tuple(mean)}, std = {tuple(std)}: must have one value per channel each")
    tail = ToNormalizedTensor(mean, std)
    s = int(image_size)
    if family == "cifar":
        weak = [T.RandomCrop(s, padding=max(s // 8, 1), padding_mode=padding_mode), T.RandomHorizontalFlip()]
        strong = T.Compose([*weak, T.RandAugment(num_ops=2, magnitude=9), tail, Cutout(s // 2)])
        auto = T.Compose([*weak, T.AutoAugment(T.AutoAugmentPolicy.CIFAR10), tail])
        ev = tail
    elif family == "digits":
        weak = [T.RandomCrop(s, padding=1, padding_mode=padding_mode)]
        strong = T.Compose([*weak, DigitsRandAugment(num_ops=2, magnitude=9), tail])
        auto = T.Compose([*weak, tail])
        ev = tail
    else:
        resize = round(s * 256 / 224)
        weak = [T.Resize(resize), T.RandomCrop(s), T.RandomHorizontalFlip()]
        strong = T.Compose([*weak, T.RandAugment(num_ops=2, magnitude=9), tail])
        auto = T.Compose([*weak, T.AutoAugment(T.AutoAugmentPolicy.IMAGENET), tail])
        ev = T.Compose([T.Resize(resize), T.CenterCrop(s), tail])
    return Transforms(weak=T.Compose([*weak, tail]), strong=strong, clean_autoaugment=auto, eval=ev)
