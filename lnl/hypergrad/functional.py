"""Parameter/buffer snapshots and functional forwards with cloned buffers (EMLC, arXiv:2305.12961, Eqs. 10-12; DML Eq. 7).

Every meta-gradient pass (look-ahead, clean gradient at θ', JVP at a snapshot θ) evaluates the network as a pure
function of a parameter dict. Buffers are always *cloned* before such a call, so BatchNorm running statistics (and
`num_batches_tracked`) of the live module change only in real training forwards.

BN mode: a functional pass uses the module's current `training` flag. In train mode BatchNorm normalizes with the
statistics of the batch it is given (running statistics are neither read nor, on the live module, written); in eval
mode it reads the running statistics, which no functional pass modifies. Either way a functional pass at parameters
θ on batch x returns exactly what the training forward at θ on x returned, which is what makes the JVP surrogate and
the unrolled reference agree. Modules with stochastic layers (dropout) break this equality and are not supported.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

ParamDict = dict[str, Tensor]


def named_params(module: nn.Module, *, trainable_only: bool = True) -> ParamDict:
    """The module's live parameters by name (those with `requires_grad` when `trainable_only`)."""
    return {n: p for n, p in module.named_parameters() if p.requires_grad or not trainable_only}


def snapshot_params(source: nn.Module | Mapping[str, Tensor], *, trainable_only: bool = True) -> ParamDict:
    """Detached tensor clones of a module's (or a dict's) parameters: θ before a step, no deep copy of the module."""
    items = named_params(source, trainable_only=trainable_only) if isinstance(source, nn.Module) else source
    names = list(items)
    with torch.no_grad():
        clones = [t.detach().clone() for t in items.values()]
    return dict(zip(names, clones))


def snapshot_buffers(module: nn.Module) -> ParamDict:
    """Detached clones of all buffers (BatchNorm running statistics, counters)."""
    return {n: b.detach().clone() for n, b in module.named_buffers()}


@contextmanager
def frozen_buffers(module: nn.Module) -> Iterator[None]:
    """Real forwards of `module` inside leave its buffers as they were (BN running statistics restored on exit)."""
    saved = snapshot_buffers(module)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buf in module.named_buffers():
                buf.copy_(saved[name])


def clone_buffers(buffers: Mapping[str, Tensor]) -> ParamDict:
    """Fresh clones of a buffer dict, to be consumed (and possibly mutated) by one functional call."""
    return {n: b.clone() for n, b in buffers.items()}


def functional_forward(
    module: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor] | None,
    x: Any,
    *,
    clone: bool = True,
) -> Tensor:
    """`module(x)` evaluated at `params` (missing names fall back to the module's own tensors).

    `buffers` defaults to the module's current buffers; they are cloned first (`clone=True`) so in-place running
    statistics updates of a train-mode BatchNorm land in throwaway copies. Inside a `torch.func` transform the
    clones must be made inside the transformed function, which is what `clone=True` does.
    """
    if buffers is None:
        buffers = dict(module.named_buffers())
    if clone:
        buffers = clone_buffers(buffers)
    return functional_call(module, (dict(params), dict(buffers)), (x,))
