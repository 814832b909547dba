"""Forward-mode JVP vs the double-backward oracle; functional passes leave live buffers untouched."""

from __future__ import annotations

import pytest
import torch

from helpers.nets import batch, bn_net, mlp, rel_err
from helpers.oracles import logprob_jvp_double_backward, output_jvp_double_backward, restore_params_
from lnl.hypergrad import frozen_buffers, functional_forward, snapshot_params
from lnl.hypergrad.functional import snapshot_buffers
from lnl.hypergrad.jvp import logprob_jvp, loss_jvp
from lnl.hypergrad.metagrad import clean_grad


def _tangent(params: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}


@pytest.mark.parametrize("backend", ["forward_ad", "func"])
@pytest.mark.parametrize("make", [mlp, bn_net], ids=["mlp", "bn"])
def test_forward_jvp_equals_double_backward(make, backend) -> None:
    net = make()
    params = snapshot_params(net)
    x, y = batch(0)
    v = _tangent(params, 1)
    logp, u = logprob_jvp(net, params, None, x, v, backend)
    assert u.shape == (6, 4) and logp.shape == (6, 4)
    assert rel_err(u, logprob_jvp_double_backward(net, params, None, x, v)) < 1e-10
    # primal output equals the ordinary train-mode forward
    torch.testing.assert_close(logp, torch.log_softmax(functional_forward(net, params, None, x), -1))
    # per-sample loss JVP against the same oracle, and against a central finite difference
    loss, s = loss_jvp(net, params, None, x, y, v, backend)
    ce = lambda z: -torch.log_softmax(z, -1).gather(1, y[:, None]).squeeze(1)  # noqa: E731
    assert rel_err(s, output_jvp_double_backward(net, params, None, x, v, ce)) < 1e-10
    eps = 1e-6
    plus = ce(functional_forward(net, {n: p + eps * v[n] for n, p in params.items()}, None, x))
    minus = ce(functional_forward(net, {n: p - eps * v[n] for n, p in params.items()}, None, x))
    assert rel_err(s, (plus - minus) / (2 * eps)) < 1e-6


def test_partial_tangent_holds_other_params_fixed() -> None:
    net = mlp()
    params = snapshot_params(net)
    x, _ = batch(0)
    v = {"3.weight": torch.randn_like(params["3.weight"])}
    _, u = logprob_jvp(net, params, None, x, v)
    assert rel_err(u, logprob_jvp_double_backward(net, params, None, x, v)) < 1e-10


def test_live_buffers_and_params_untouched() -> None:
    net = bn_net()
    buffers0 = snapshot_buffers(net)
    params0 = snapshot_params(net)
    x, y = batch(0)
    params = snapshot_params(net)
    logprob_jvp(net, params, None, x, _tangent(params, 2))
    logprob_jvp(net, params, None, x, _tangent(params, 2), backend="func")
    logprob_jvp_double_backward(net, params, None, x, _tangent(params, 2))
    clean_grad(net, dict(net.named_parameters()), None, x, y)
    functional_forward(net, {n: p + 1.0 for n, p in params.items()}, None, x)
    for n, b in net.named_buffers():
        assert torch.equal(b, buffers0[n]), n
    for n, p in net.named_parameters():
        assert torch.equal(p, params0[n]) and p.grad is None, n
    with frozen_buffers(net):  # a real forward whose gradient is taken inside, statistics restored after
        net(x).sum().backward()
    for n, b in net.named_buffers():
        assert torch.equal(b, buffers0[n]), n
    # a real training forward does update them (the checks above are not vacuous)
    net(x)
    assert not torch.equal(net[1].running_mean, buffers0["1.running_mean"])
    assert int(net[1].num_batches_tracked) == int(buffers0["1.num_batches_tracked"]) + 1


def test_snapshot_is_a_copy_and_restores() -> None:
    net = mlp()
    snap = snapshot_params(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert all(not torch.equal(p, snap[n]) for n, p in net.named_parameters())
    restore_params_(net, snap)
    assert all(torch.equal(p, snap[n]) for n, p in net.named_parameters())
