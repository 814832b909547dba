"""Averaging across ranks for gradients written outside DDP's hooks (autograd.grad, forward-mode AD); row gathers.

All functions are no-ops outside an initialized `torch.distributed` process group with more than one rank. They
use one coalesced all-reduce per dtype/device, so every rank must call them with the same tensors in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Number of ranks (1 outside torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _average_(tensors: list[Tensor]) -> None:
    """Average a list of tensors across ranks in place (coalesced per dtype and device)."""
    ws = world_size()
    if ws == 1 or not tensors:
        return
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    for ts in groups.values():
        flat = torch.cat([t.reshape(-1) for t in ts])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(ws)
        offset = 0
        for t in ts:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n


def all_reduce_grads(params: Iterable[Tensor]) -> None:
    """Average `.grad` of `params` across ranks in place; a missing grad counts as zeros (every rank agrees)."""
    params = list(params)
    if world_size() == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    with torch.no_grad():
        _average_([p.grad for p in params])


def all_reduce_mean(value: Tensor) -> Tensor:
    """Mean of a tensor over ranks, as a new tensor (the input itself outside DDP). Not differentiable."""
    if world_size() == 1:
        return value
    out = value.detach().clone()
    _average_([out])
    return out


def all_reduce_mean_dict(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Mean over ranks of a dict of tensors (e.g. the clean gradient g_w) in one coalesced call."""
    if world_size() == 1:
        return dict(tensors)
    out = {n: t.detach().clone() for n, t in tensors.items()}
    with torch.no_grad():
        _average_(list(out.values()))
    return out


def all_gather_rows(t: Tensor) -> Tensor:
    """Concatenate `t` (first dim may differ per rank) over all ranks in rank order; identity outside DDP."""
    if world_size() == 1:
        return t
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes_i = [int(s.item()) for s in sizes]
    padded = t.new_zeros((max(sizes_i), *t.shape[1:]))
    padded[: t.shape[0]] = t
    out = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes_i)])
