"""Per-sample Jacobian-vector products of a network's outputs (EMLC Eq. 10, Corollary 3.1).

`u = J_{φ(f(x; θ))} · v` for a whole batch: row i is the directional derivative of sample i's output φ(f(x_i; θ))
(log-probabilities [B, C] or a per-sample loss [B]) along the parameter direction v. Forward-mode AD
(dual tensors, or `torch.func.jvp`) computes it in one pass costing about three forwards; the double-backward
variant (two reverse passes) is the tests' oracle (`tests/helpers/oracles.py`). Both run the network functionally with cloned buffers
(see `functional.py` for the BatchNorm mode). Under train-mode BatchNorm, sample i's output depends on the whole
batch through the batch statistics; J is then the Jacobian of the batched map, which is exactly the Jacobian that
the training step's gradient uses, so the identities of `metagrad.py` stay exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import jvp

from lnl.hypergrad.functional import ParamDict, clone_buffers, functional_forward
from lnl.numerics import wide

OutputMap = Callable[[Tensor], Tensor]


def log_probs(logits: Tensor) -> Tensor:
    """φ(z) = log softmax(z) in float32 or wider (the student's soft-target CE is linear in it)."""
    return F.log_softmax(wide(logits), dim=-1)


def _split(
    params: Mapping[str, Tensor], tangents: Mapping[str, Tensor]
) -> tuple[ParamDict, ParamDict, ParamDict]:
    """Primals (params with a tangent), their tangents, and the remaining params held fixed."""
    missing = [n for n in tangents if n not in params]
    if missing:
        raise KeyError(f"tangents for unknown parameters: {missing[:3]}")
    primals = {n: params[n].detach() for n in tangents}
    fixed = {n: p.detach() for n, p in params.items() if n not in tangents}
    tans = {n: tangents[n].detach().to(primals[n].dtype) for n in tangents}
    return primals, tans, fixed


def output_jvp(
    module: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor] | None,
    x: Any,
    tangents: Mapping[str, Tensor],
    output_map: OutputMap = log_probs,
    backend: Literal["forward_ad", "func"] = "forward_ad",
) -> tuple[Tensor, Tensor]:
    """(φ(f(x; θ)), J_{φ∘f}(θ)·v) by forward-mode AD; θ = `params`, v = `tangents` (same names, subset allowed).

    `backend="forward_ad"` uses dual tensors (`torch.autograd.forward_ad`), `"func"` uses `torch.func.jvp`; both
    are forward-mode AD with the same result (tested), the first is faster on CPU for conv nets (about 3 forward
    passes). No autograd graph is recorded (outputs are detached); buffers are cloned for the call.
    """
    if buffers is None:
        buffers = {n: b.detach() for n, b in module.named_buffers()}
    primals, tans, fixed = _split(params, tangents)
    with torch.no_grad():
        if backend == "forward_ad":
            with fwAD.dual_level():
                duals = {n: fwAD.make_dual(p, tans[n]) for n, p in primals.items()}
                out = output_map(functional_forward(module, {**fixed, **duals}, buffers, x))
                primal, tangent = fwAD.unpack_dual(out)
            return primal, torch.zeros_like(primal) if tangent is None else tangent
        if backend != "func":
            raise ValueError(f"backend = {backend!r}: expected 'forward_ad' or 'func'")

        def fn(p: ParamDict) -> Tensor:
            return output_map(
                functional_forward(module, {**fixed, **p}, clone_buffers(buffers), x, clone=False)
            )

        return jvp(fn, (primals,), (tans,))


def logprob_jvp(
    module: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor] | None,
    x: Any,
    tangents: Mapping[str, Tensor],
    backend: Literal["forward_ad", "func"] = "forward_ad",
) -> tuple[Tensor, Tensor]:
    """(log p(x; θ), u) with u_i = J_{log softmax f(x_i; θ)} · v, shape [B, C] (EMLC Eq. 10, the `jvp_i`)."""
    return output_jvp(module, params, buffers, x, tangents, log_probs, backend)


def loss_jvp(
    module: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor] | None,
    x: Any,
    y: Tensor,
    tangents: Mapping[str, Tensor],
    backend: Literal["forward_ad", "func"] = "forward_ad",
) -> tuple[Tensor, Tensor]:
    """(ℓ_i, s_i) with ℓ_i = CE(f(x_i; θ), y_i) and s_i = ∇_θ ℓ_i · v, shape [B] (per-sample-weight surrogates)."""

    def per_sample_ce(logits: Tensor) -> Tensor:
        return -log_probs(logits).gather(1, y[:, None]).squeeze(1)

    return output_jvp(module, params, buffers, x, tangents, per_sample_ce, backend)
