"""Hold-out, batch size and epoch length fitted to a small dataset of one's own (`data.scale_to_data: true`).

lnl's rule, not a paper's: a run needs a validation hold-out in every class, enough images left to learn from,
and enough optimizer steps. The configured `val_per_class` and `batch_size` are upper limits: the hold-out takes
at most a fifth of the smallest class, a batch at most an eighth of the training images, and an epoch is made
at least `MIN_STEPS` batches long by drawing the training images more than once (so epoch-based schedules keep
their meaning). A class with fewer than `MIN_PER_CLASS` images is refused with one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lnl.errors import ConfigError

MIN_PER_CLASS = 10  # images per class: 2 held out for validation, 8 to learn from
HOLDOUT_SHARE = 0.2  # at most this share of the smallest class is held out
MIN_STEPS = 8  # optimizer steps per epoch at least
MIN_BATCH = 8  # smallest batch the rule picks (batch norm needs a few samples)


@dataclass(frozen=True)
class Sizing:
    """Hold-out per class, batch size and training samples per epoch (≥ the training images) for one dataset."""

    val_per_class: int
    batch_size: int
    samples_per_epoch: int
    train_images: int

    def describe(self, counts: np.ndarray) -> str:
        """One line saying what was chosen, for the log."""
        passes = self.samples_per_epoch / max(self.train_images, 1)
        repeat = (
            f" (each image {passes:.1f}x per epoch)" if self.samples_per_epoch > self.train_images else ""
        )
        return (
            f"lnl: {int(counts.sum())} images in {len(counts)} classes (smallest {int(counts.min())}): "
            f"val_per_class {self.val_per_class}, batch_size {self.batch_size}, "
            f"{self.samples_per_epoch // self.batch_size} steps per epoch{repeat}"
        )


def fit_to_data(counts: np.ndarray, *, val_per_class: int, batch_size: int, reserved_per_class: int = 0,
                names: list[str] | None = None, what: str = "data") -> Sizing:  # fmt: skip
    """Sizing for per-class image counts `counts` (of the labels the hold-out is drawn by); `val_per_class` and
    `batch_size` are the configured upper limits, `reserved_per_class` images per class go elsewhere (a clean
    set). ConfigError when a class has fewer than MIN_PER_CLASS images (after the reserved ones)."""
    counts = np.asarray(counts, dtype=np.int64)
    usable = counts - reserved_per_class
    worst = int(usable.argmin())
    if usable[worst] < MIN_PER_CLASS:
        name = names[worst] if names is not None else str(worst)
        raise ConfigError(
            f"{what}: class {name!r} has {int(counts[worst])} images; lnl needs at least "
            f"{MIN_PER_CLASS + reserved_per_class} per class (a fifth held out for validation, the rest to learn "
            "from); add images to that class or leave it out"
        )
    val = int(min(val_per_class, max(1, int(HOLDOUT_SHARE * usable[worst]))))
    train = int(usable.sum()) - val * len(counts)
    batch = int(min(batch_size, max(MIN_BATCH, train // MIN_STEPS)))
    return Sizing(val, batch, max(train, MIN_STEPS * batch), train)
