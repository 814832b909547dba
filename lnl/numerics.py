"""Low-level numerics shared by losses, models and the meta-gradient engine (imports nothing from lnl).

Differences of losses and tiny gradients are computed in float32 or wider, also under bf16 autocast: `wide` is the
one place that widens.
"""

from __future__ import annotations

import torch
from torch import Tensor


def wide(t: Tensor) -> Tensor:
    """`t` in float32 when it is float16/bfloat16 (autocast outputs), unchanged otherwise (float32/float64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
