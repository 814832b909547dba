"""Layers that reproduce the official codes' backbones: option-A shortcuts, He-normal init, step-shared dropout.

- `ZeroPadShortcut`: He et al. 2016 (Sec. 4.2, option A), as the official MW-Net `resnet.py` (`LambdaLayer`:
  `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes//4, planes//4))`): subsample by 2, zero channels on both sides.
- `he_normal_`: `init.kaiming_normal` of every Conv2d / Linear weight (MW-Net `resnet.py` `_weights_init`).
- `StepDropout`: dropout (Srivastava et al. 2014) whose mask is drawn once per training step and batch: every
  forward of the same input batch in one step (the real forward, a look-ahead's functional forward, a JVP's
  forward) sees the same mask, so a meta-gradient through a virtual step is taken on the network the real step
  trains; another batch (e.g. the clean batch) draws its own mask. `new_dropout_masks` starts a step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor, nn

_BATCH: ContextVar[tuple[int, tuple[int, ...]] | None] = ContextVar("lnl_dropout_batch", default=None)
_MAX_MASKS = 16  # masks kept per layer between two `new_dropout_masks` calls (a guard, not a limit in use)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: x[:, :, ::s, ::s] with (cout − cin)/2 zero channels before and after (no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        if (cout - cin) % 2 or cout < cin:
            raise ValueError(f"option-A shortcut needs cout - cin even and >= 0, got {cin} -> {cout}")
        self.pad, self.stride = (cout - cin) // 2, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, self.pad, self.pad))


def he_normal_(module: nn.Module) -> nn.Module:
    """He-normal (fan-in, gain √2) weights for every Conv2d and Linear; biases and BatchNorm left as PyTorch's."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight)
    return module


@contextmanager
def dropout_batch(x: Tensor) -> Iterator[None]:
    """Name the batch a network forward runs on (its input tensor), for the masks of `StepDropout`."""
    token = _BATCH.set((x.data_ptr(), tuple(x.shape)))
    try:
        yield
    finally:
        _BATCH.reset(token)


class StepDropout(nn.Module):
    """Dropout with one mask per (training step, input batch): repeated forwards of a batch share it."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p = {p}: must be in [0, 1)")
        self.p = p
        self._masks: dict[tuple, Tensor] = {}

    def reset(self) -> None:
        self._masks.clear()

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        key = (_BATCH.get(), tuple(x.shape), x.device)
        mask = self._masks.get(key)
        if mask is None:
            if len(self._masks) >= _MAX_MASKS:
                self._masks.clear()
            mask = torch.empty(x.shape, device=x.device).bernoulli_(1.0 - self.p).bool()
            self._masks[key] = mask
        return torch.where(mask, x / (1.0 - self.p), torch.zeros((), dtype=x.dtype, device=x.device))

    def extra_repr(self) -> str:
        return f"p={self.p}, one mask per step and batch"


def new_dropout_masks(module: nn.Module) -> None:
    """Start a training step: every `StepDropout` in `module` draws new masks at its next forward."""
    for m in module.modules():
        if isinstance(m, StepDropout):
            m.reset()
