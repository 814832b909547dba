"""Test-only oracles: slow, obviously-correct derivations the engine's fast paths are checked against."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lnl.hypergrad import functional_forward
from lnl.hypergrad.jvp import log_probs


def output_jvp_double_backward(
    module: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor] | None,
    x: Any,
    tangents: Mapping[str, Tensor],
    output_map=log_probs,  # noqa: ANN001
) -> Tensor:
    """J·v = ∂/∂r ⟨J^T r, v⟩ with a dummy cotangent r (two reverse passes): the oracle for `output_jvp`."""
    fixed = {n: p.detach() for n, p in params.items() if n not in tangents}
    with torch.enable_grad():
        leaves = {n: params[n].detach().clone().requires_grad_(True) for n in tangents}
        out = output_map(functional_forward(module, {**fixed, **leaves}, buffers, x))
        r = torch.zeros_like(out, requires_grad=True)
        vjp = torch.autograd.grad(
            out, list(leaves.values()), grad_outputs=r, create_graph=True, allow_unused=True
        )
        dot = sum((g * tangents[n].to(g.dtype)).sum() for n, g in zip(leaves, vjp) if g is not None)
        (jv,) = torch.autograd.grad(dot, r, allow_unused=True)
    return torch.zeros_like(out) if jv is None else jv.detach()


def logprob_jvp_double_backward(module: nn.Module, params, buffers, x, tangents) -> Tensor:  # noqa: ANN001
    """The oracle for `logprob_jvp`'s u."""
    return output_jvp_double_backward(module, params, buffers, x, tangents, log_probs)


def restore_params_(module: nn.Module, snapshot: Mapping[str, Tensor]) -> None:
    """Copy a snapshot back into the live parameters in place (optimizer state untouched)."""
    live = dict(module.named_parameters())
    with torch.no_grad():
        for n, v in snapshot.items():
            live[n].copy_(v)
