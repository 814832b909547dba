"""Float64 exactness of the per-sample weight meta-gradients (MW-Net's α-gradient, L2RW's ε-gradient).

Oracle: autograd through a hand-written SGD step (momentum buffer from a warm optimizer, weight decay, optionally
Nesterov) on a train-mode BatchNorm net, all functional. Estimators: `unrolled` (second order through the step
built by `Lookahead.of`) and `jvp` (one forward-mode JVP of the per-sample losses), both on the live module.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.nets import batch, bn_net, rel_err
from helpers.oracles import restore_params_
from lnl.hypergrad import Lookahead, functional_forward, snapshot_params
from lnl.hypergrad.metagrad import clean_grad, unrolled_metagrad, weight_surrogate
from lnl.hypergrad.weights import (
    l2rw_weights,
    weight_coefficients,
    weight_sensitivities,
    weighted_loss,
)
from lnl.models.teachers import WeightNet

SGD = {
    "momentum_wd": dict(lr=0.2, momentum=0.9, weight_decay=5e-3),
    "nesterov_wd": dict(lr=0.2, momentum=0.9, weight_decay=5e-3, nesterov=True),
}
CASES = [("optimizer", "momentum_wd"), ("optimizer", "nesterov_wd"), ("sgd", "momentum_wd")]


def _warm_optimizer(net: torch.nn.Module, **kw) -> torch.optim.SGD:
    """SGD with a non-trivial momentum buffer (one step on a throwaway batch), parameters restored afterwards."""
    opt, snap = torch.optim.SGD(net.parameters(), **kw), snapshot_params(net)
    F.cross_entropy(net(batch(99)[0]), batch(99)[1]).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    restore_params_(net, snap)
    return opt


def _oracle_step(theta: dict, grads: dict, opt: torch.optim.SGD, live: dict, kind: str) -> dict:
    """θ' by hand: torch.optim.SGD's next update (d = g + λθ, b' = μb + d, θ − lr·b' or θ − lr·(d + μb')), or the
    plain θ − lr·g of the official codes."""
    group, out = opt.param_groups[0], {}
    lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
    for n, p in theta.items():
        if kind == "sgd":
            out[n] = p - lr * grads[n]
            continue
        d = grads[n] + wd * p
        b = mu * opt.state[live[n]]["momentum_buffer"] + d
        out[n] = p - lr * (d + mu * b if group["nesterov"] else b)
    return out


def _setup(sgd: str):
    student = bn_net()
    opt = _warm_optimizer(student, **SGD[sgd])
    x, y = batch(0)
    xc, yc = batch(1, n=5)
    return student, opt, dict(student.named_parameters()), (x, y), (xc, yc)


def _oracle(student, opt, live, noisy, clean, kind, coefficients, meta_params):
    """d CE(f(x_c; θ'(c))) / d meta_params, with c = coefficients(per-sample losses) at functional leaves."""
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in live.items()}
    losses = F.cross_entropy(functional_forward(student, leaves, None, noisy[0]), noisy[1], reduction="none")
    c = coefficients(losses)
    grads = torch.autograd.grad((c * losses).sum(), list(leaves.values()), create_graph=True)
    new = _oracle_step(leaves, dict(zip(leaves, grads)), opt, live, kind)
    clean_loss = F.cross_entropy(functional_forward(student, new, None, clean[0]), clean[1])
    return list(torch.autograd.grad(clean_loss, meta_params)), clean_loss.detach()


@pytest.mark.parametrize("normalize", [False, True], ids=["mean", "sum_normalized"])
@pytest.mark.parametrize("kind,sgd", CASES, ids=[f"{k}_{s}" for k, s in CASES])
def test_mwnet_alpha_gradient_unrolled_and_jvp_equal_the_oracle(kind, sgd, normalize) -> None:
    student, opt, live, noisy, clean = _setup(sgd)
    vnet = WeightNet(hidden=7).double()
    alpha = list(vnet.parameters())

    def coefficients(losses):
        return weight_coefficients(vnet(losses), normalize)

    ref, ref_loss = _oracle(student, opt, live, noisy, clean, kind, coefficients, alpha)
    step = Lookahead.of(opt, live, kind)

    # unrolled: second order through the step, on the live module's training forward
    losses = F.cross_entropy(student(noisy[0]), noisy[1], reduction="none")
    got_u, loss_u, g_v = unrolled_metagrad(
        weighted_loss(losses, coefficients(losses)), live, alpha, student, None, *clean, step
    )
    assert rel_err(got_u, ref) < 1e-8
    torch.testing.assert_close(loss_u, ref_loss, rtol=1e-10, atol=0)
    # the graph of the losses is still there for the real step (with the updated weighting net)
    real = torch.autograd.grad(weighted_loss(losses, coefficients(losses).detach()), list(live.values()))
    assert all(torch.isfinite(g).all() for g in real)

    # jvp: virtual gradient, θ' by value, g_w at θ', one JVP of the per-sample losses at θ
    losses = F.cross_entropy(student(noisy[0]), noisy[1], reduction="none")
    c = coefficients(losses)
    grads = torch.autograd.grad(weighted_loss(losses, c.detach()), list(live.values()), retain_graph=True)
    for a, b in zip(grads, g_v.values()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    loss_c, g_w = clean_grad(student, step.step_value(live, dict(zip(live, grads))), None, *clean)
    s = weight_sensitivities(student, live, None, *noisy, g_w, step)
    got_j = torch.autograd.grad(weight_surrogate(s, c, 1.0), alpha)
    assert rel_err(list(got_j), ref) < 1e-8
    torch.testing.assert_close(loss_c, ref_loss, rtol=1e-10, atol=0)


@pytest.mark.parametrize("kind,sgd", CASES, ids=[f"{k}_{s}" for k, s in CASES])
def test_l2rw_eps_gradient_unrolled_and_jvp_equal_the_oracle(kind, sgd) -> None:
    student, opt, live, noisy, clean = _setup(sgd)
    n = noisy[1].shape[0]
    eps = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    (ref,), _ = _oracle(student, opt, live, noisy, clean, kind, lambda losses: eps / n, [eps])
    step = Lookahead.of(opt, live, kind)

    losses = F.cross_entropy(student(noisy[0]), noisy[1], reduction="none")
    (got_u,), _, _ = unrolled_metagrad(
        weighted_loss(losses, eps / n), live, [eps], student, None, *clean, step
    )
    assert rel_err(got_u, ref) < 1e-8

    zeros = {k: torch.zeros_like(p) for k, p in live.items()}  # ∇ Σ ε_i ℓ_i at ε = 0
    _, g_w = clean_grad(student, step.step_value(live, zeros), None, *clean)
    got_j = -weight_sensitivities(student, live, None, *noisy, g_w, step) / n
    assert rel_err(got_j, ref) < 1e-8
    assert (ref > 0).any() and (ref < 0).any()  # some samples up-weighted, some dropped


def test_momentum_and_weight_decay_move_the_lookahead() -> None:
    """The two virtual steps differ (the oracle comparisons above are not between identical quantities)."""
    student, opt, live, noisy, clean = _setup("momentum_wd")
    n = noisy[1].shape[0]
    eps = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    refs = [_oracle(student, opt, live, noisy, clean, k, lambda losses: eps / n, [eps])[0][0] for k in ("sgd",
            "optimizer")]  # fmt: skip
    assert rel_err(refs[0], refs[1]) > 1e-2


def test_l2rw_weights_clip_and_normalize() -> None:
    g = torch.tensor([-2.0, 1.0, -6.0, 0.0])
    torch.testing.assert_close(l2rw_weights(g), torch.tensor([0.25, 0.0, 0.75, 0.0]))
    torch.testing.assert_close(l2rw_weights(torch.tensor([1.0, 0.0])), torch.zeros(2))
    torch.testing.assert_close(l2rw_weights(g, total=torch.tensor(4.0)), torch.tensor([0.5, 0.0, 1.5, 0.0]))


def test_weight_coefficients_and_virtual_step_options() -> None:
    w = torch.tensor([0.2, 0.6])
    torch.testing.assert_close(weight_coefficients(w), torch.tensor([0.1, 0.3]))
    torch.testing.assert_close(weight_coefficients(w, normalize=True), torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(weight_coefficients(torch.zeros(2), normalize=True), torch.zeros(2))
    net = bn_net()
    live = dict(net.named_parameters())
    adam = torch.optim.Adam(net.parameters(), lr=1e-3)
    assert set(Lookahead.of(adam, live, "sgd").eta.values()) == {1e-3}
    with pytest.raises(TypeError, match="needs torch.optim.SGD, got Adam"):
        Lookahead.of(adam, live, "optimizer").step(live, live)
    with pytest.raises(ValueError, match="rule = 'bogus': expected 'sgd' or 'optimizer'"):
        Lookahead.of(adam, live, "bogus")  # type: ignore[arg-type]


def test_weight_net_is_a_sigmoid_mlp_on_the_detached_loss() -> None:
    vnet = WeightNet()
    assert [m.__class__.__name__ for m in vnet.net] == ["Linear", "ReLU", "Linear"]
    assert vnet.net[0].out_features == 100
    losses = torch.rand(5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = vnet(losses)
    assert w.shape == (5,) and w.dtype == torch.float32 and ((w > 0) & (w < 1)).all()
    w.sum().backward()
    assert losses.grad is None and vnet.net[0].weight.grad is not None
