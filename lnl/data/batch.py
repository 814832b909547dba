"""The training batch as typed records: what a method asks of the data, the streams it gets, their views.

A training batch holds the noisy stream (every method) and, for methods that ask for one, the clean stream
(`Batch`). Each stream (`Stream`) carries its images as `Views` (one tensor per augmented view of the same
images), its labels and its training-set indices. The loaders' items are dicts (`lnl.data.loading`); the
training loaders' collate (`collate_stream`) makes the records, and `as_batch` turns a dict-of-dicts batch of
another data module into them once, before a step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import default_collate

from lnl.errors import ConfigError


class Views(NamedTuple):
    """A stream's views of the same images, each float32 [B, C, H, W] normalized; None where not asked for.

    The fields are the view keys: a method's `train_views` ("weak", "strong", "autoaugment", as
    `lnl.data.transforms` defines them) name them, a repeated view gets a numbered key (`view_keys`).
    """

    weak: Tensor | None = None
    strong: Tensor | None = None
    strong2: Tensor | None = None  # a second, independent strong view (SimCLR's pair)
    autoaugment: Tensor | None = None  # the clean stream's AutoAugment view (EMLC's `clean_augment`)

    def first(self) -> Tensor:
        """The first view present (the only one of a one-view stream)."""
        return next(v for v in self if v is not None)


VIEW_KEYS: tuple[str, ...] = Views._fields


def view_keys(train_views: Sequence[str]) -> tuple[str, ...]:
    """The `Views` keys of a method's `train_views`: a repeated view gets a number (strong, strong -> strong,
    strong2); ConfigError for a combination no `Views` field holds."""
    keys = tuple(v if train_views[:i].count(v) == 0 else f"{v}{train_views[:i].count(v) + 1}"
                 for i, v in enumerate(train_views))  # fmt: skip
    bad = [k for k in keys if k not in VIEW_KEYS]
    if bad or not keys:
        raise ConfigError(f"train_views = {tuple(train_views)}: view keys {bad}; allowed are {VIEW_KEYS}")
    return keys


class Stream(NamedTuple):
    """One training stream's batch of B samples (shapes per field).

    `has_true` is set on the host before the batch moves to the device, so that a step asks for diagnostics
    without a device sync. `epoch` and `plans` are only set on the device-views path (`lnl.data.device_views`)
    between the loader and the device, where the views are drawn from (epoch, index).
    """

    views: Views
    y: Tensor  # [B] int64: the labels to train on (given / noisy labels; the clean stream's clean labels)
    index: Tensor | None = None  # [B] int64: rows of the data module's `train_set`
    y_true: Tensor | None = None  # [B] int64: true labels, -1 where unknown (noisy stream only)
    has_true: bool = False  # whether any y_true >= 0
    epoch: Tensor | None = None  # [B] int64: the sample's epoch, until the views are drawn on the device
    plans: dict[str, Any] | None = None  # per view key: its host-drawn plan (device views only)

    @property
    def x(self) -> Tensor:
        """The stream's first view [B, C, H, W] (the only one of a one-view stream)."""
        return self.views.first()

    @classmethod
    def of(cls, stream: Stream | Mapping[str, Any], view: str = "weak") -> Stream:
        """A stream from the dict form of the loaders' items (`x`: one view `view`, or a dict of view keys)."""
        if isinstance(stream, Stream):
            return stream
        x, y_true = stream.get("x"), stream.get("y_true")
        views = Views(**x) if isinstance(x, Mapping) else Views() if x is None else Views(**{view: x})
        flag = stream.get("has_true")
        has_true = bool((y_true >= 0).any()) if flag is None and y_true is not None else bool(flag)
        return cls(views, stream["y"], stream.get("index"), y_true, has_true, stream.get("epoch"))


class Batch(NamedTuple):
    """A training batch: the noisy stream and, for a method that `needs_clean`, the clean stream."""

    noisy: Stream
    clean: Stream | None = None

    def streams(self) -> dict[str, Stream]:
        """The streams present, by name."""
        return {k: s for k, s in zip(self._fields, self) if s is not None}


def as_batch(batch: Batch | Mapping[str, Any]) -> Batch:
    """`batch` as a `Batch` (a dict-of-dicts batch `{"noisy": {...}, "clean": {...}}` is converted once)."""
    if isinstance(batch, Batch):
        return batch
    clean = batch.get("clean")
    return Batch(Stream.of(batch["noisy"]), None if clean is None else Stream.of(clean))


def collate_stream(items: list[dict[str, Any]], view: str = "weak") -> Stream:
    """The training loaders' collate: default-collated items as a `Stream` (a one-view `x` is view `view`)."""
    return Stream.of(default_collate(items), view)


@dataclass(frozen=True)
class DataRequirements:
    """What a method asks of the data: a clean stream, the train views, the clean-set augmentation."""

    needs_clean: bool = False
    train_views: tuple[str, ...] = ("weak",)
    clean_augment: str = "weak"

    @classmethod
    def of(cls, module: Any) -> DataRequirements:
        return cls(
            getattr(module, "needs_clean", False),
            tuple(getattr(module, "train_views", ("weak",))),
            getattr(module, "clean_augment", "weak"),
        )

    @property
    def clean_view(self) -> str:
        """The clean stream's view: `autoaugment` when asked for, else `weak`."""
        return "autoaugment" if self.clean_augment == "autoaugment" else "weak"


def synthetic_batch(
    requirements: DataRequirements,
    *,
    batch_size: int,
    clean_batch_size: int | None = None,
    image_size: int = 8,
    num_classes: int = 4,
    seed: int = 0,
    position: int = 0,
    flip_rate: float = 0.4,
) -> Batch:
    """A seeded batch shaped as `requirements` asks (views, clean stream), for the bench and the tests.

    B noisy samples of which about `flip_rate` get a uniformly redrawn label, and `clean_batch_size` clean
    ones; 3-channel images carry a class-dependent mean (0.5 per class id) plus unit Gaussian noise. The first
    view is the image itself, every further view adds fresh noise (drawn last, so that a one-view batch does
    not depend on the views). `position` (the batch's place in its epoch) offsets `index`.
    """
    b, bc = batch_size, clean_batch_size if clean_batch_size is not None else batch_size
    g = torch.Generator().manual_seed(seed)
    y_true = torch.randint(0, num_classes, (b,), generator=g)
    flip = torch.rand(b, generator=g) < flip_rate
    y = torch.where(flip, torch.randint(0, num_classes, (b,), generator=g), y_true)
    yc = torch.randint(0, num_classes, (bc,), generator=g)

    def images(labels: Tensor) -> Tensor:
        noise = torch.randn(len(labels), 3, image_size, image_size, generator=g)
        return noise + labels.float()[:, None, None, None] * 0.5

    x, xc = images(y_true), images(yc)
    keys = view_keys(requirements.train_views)
    views = Views(**{keys[0]: x, **{k: x + 0.3 * torch.randn(x.shape, generator=g) for k in keys[1:]}})
    noisy = Stream(views, y, position * b + torch.arange(b), y_true, bool((y_true >= 0).any()))
    if not requirements.needs_clean:
        return Batch(noisy)
    clean = Stream(Views(**{requirements.clean_view: xc}), yc, position * bc + torch.arange(bc))
    return Batch(noisy, clean)
