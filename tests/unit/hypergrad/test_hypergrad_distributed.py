"""Gradient averaging is a no-op in one process (two gloo ranks: integration/methods/test_shared_properties.py)."""

from __future__ import annotations

import torch

from lnl.hypergrad.distributed import all_reduce_grads, all_reduce_mean, all_reduce_mean_dict, world_size


def test_noop_outside_distributed() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    all_reduce_grads([p])
    assert world_size() == 1 and torch.equal(p.grad, torch.full((3,), 2.0))
    t = torch.arange(3.0)
    assert all_reduce_mean(t) is t
    assert torch.equal(all_reduce_mean_dict({"a": t})["a"], t)
