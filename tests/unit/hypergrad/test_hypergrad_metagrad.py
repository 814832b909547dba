"""Float64 exactness of the meta-gradient surrogates against autograd through functional SGD steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.nets import QNet, batch, bn_net, mlp, rel_err
from lnl.hypergrad import Lookahead, functional_forward, snapshot_params
from lnl.hypergrad.functional import snapshot_buffers
from lnl.hypergrad.jvp import loss_jvp
from lnl.hypergrad.metagrad import (
    clean_grad,
    kstep_coefficients,
    kstep_surrogate,
    onestep_surrogate,
    unrolled_metagrad,
    weight_surrogate,
)
from lnl.losses import soft_cross_entropy


def _warm_optimizer(net: torch.nn.Module, **kw) -> torch.optim.SGD:
    """SGD with a non-trivial momentum buffer (one step on a throwaway loss), params restored afterwards."""
    opt = torch.optim.SGD(net.parameters(), **kw)
    snap = snapshot_params(net)
    x, y = batch(99)
    F.cross_entropy(net(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        for n, p in net.named_parameters():
            p.copy_(snap[n])
    return opt


@pytest.mark.parametrize("make", [mlp, bn_net], ids=["bn_free", "batchnorm"])
@pytest.mark.parametrize(
    "sgd",
    [dict(lr=0.3), dict(lr=0.2, momentum=0.9, weight_decay=5e-4, nesterov=True)],
    ids=["plain", "nesterov_wd"],
)
def test_onestep_surrogate_equals_unrolled(make, sgd) -> None:
    """Eq. 10: the JVP surrogate's teacher gradient = d CE(f(x_c; θ'(α)))/dα through a functional SGD step."""
    student, qnet = make(), QNet().double()
    opt = _warm_optimizer(student, **sgd)
    x, y = batch(0)
    xc, yc = batch(1, n=5)
    live = dict(student.named_parameters())
    buffers0 = snapshot_buffers(student)

    # exact reference: autograd through the optimizer's (differentiable) next step, all functional
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in live.items()}
    inner = soft_cross_entropy(functional_forward(student, leaves, None, x), qnet(x, y))
    ref, ref_loss, _ = unrolled_metagrad(
        inner, leaves, list(qnet.parameters()), student, None, xc, yc, Lookahead.of(opt, live)
    )

    # the method's path: live training forward + real optimizer step, g_w at θ', JVP at the snapshot θ
    q = qnet(x, y)
    theta = snapshot_params(student)
    step = Lookahead.of(opt, live)
    soft_cross_entropy(student(x), q.detach()).backward()
    opt.step()
    loss_c, g_w = clean_grad(student, live, None, xc, yc)
    sur, u = onestep_surrogate(student, theta, None, x, q, step.scale(g_w))
    got = torch.autograd.grad(sur, list(qnet.parameters()))
    assert u.shape == (6, 4)
    assert rel_err(list(got), ref) < 1e-8
    assert torch.allclose(loss_c, ref_loss, rtol=1e-10, atol=0)
    # only the real training forward touched the BN running statistics (once)
    for n, b in student.named_buffers():
        if n.endswith("num_batches_tracked"):
            assert int(b) == int(buffers0[n]) + 1


def test_weight_surrogate_equals_unrolled() -> None:
    """Per-sample weights (L2RW/MW-Net form): −(1/N) Σ sg(s_i) w_i(α) vs autograd through the step."""
    student = bn_net()
    x, y = batch(0)
    xc, yc = batch(1)
    a = torch.linspace(-1, 1, 6, dtype=torch.float64).requires_grad_(True)
    lr = 0.25
    theta = snapshot_params(student)
    leaves = {n: p.clone().requires_grad_(True) for n, p in theta.items()}
    per = F.cross_entropy(functional_forward(student, leaves, None, x), y, reduction="none")
    inner = (torch.sigmoid(a) * per).mean()
    ref, _, grads = unrolled_metagrad(
        inner, leaves, [a], student, None, xc, yc, Lookahead.constant(lr, leaves)
    )
    new = {n: theta[n] - lr * grads[n] for n in theta}
    _, g_w = clean_grad(student, new, None, xc, yc)
    _, s = loss_jvp(student, theta, None, x, y, Lookahead.constant(lr, g_w).scale(g_w))
    (got,) = torch.autograd.grad(weight_surrogate(s, torch.sigmoid(a)), [a])
    assert rel_err(got, ref[0]) < 1e-8


def test_mixed_batch_rows_and_denominator() -> None:
    """Gold rows appended to the student batch: u uses the whole batch, q covers the first rows, N = all rows."""
    student, qnet = bn_net(), QNet().double()
    x, y = batch(0)
    xg, yg = batch(2, n=3)
    xc, yc = batch(1)
    lr = 0.3
    x_all = torch.cat([x, xg])
    theta = snapshot_params(student)
    leaves = {n: p.clone().requires_grad_(True) for n, p in theta.items()}
    logits = functional_forward(student, leaves, None, x_all)
    targets = torch.cat([qnet(x, y), F.one_hot(yg, 4).double()])
    inner = soft_cross_entropy(logits, targets)
    ref, _, grads = unrolled_metagrad(
        inner, leaves, list(qnet.parameters()), student, None, xc, yc, Lookahead.constant(lr, leaves)
    )
    _, g_w = clean_grad(student, {n: theta[n] - lr * grads[n] for n in theta}, None, xc, yc)
    tangent = Lookahead.constant(lr, g_w).scale(g_w)
    sur, _ = onestep_surrogate(student, theta, None, x_all, qnet(x, y), tangent, denom=9)
    assert rel_err(list(torch.autograd.grad(sur, list(qnet.parameters()))), ref) < 1e-8


def _kstep_setup(k: int = 3):
    student, qnet = mlp(), QNet().double()
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    lrs = [0.1, 0.05, 0.2][:k]
    snaps, xs, qs = [], [], []
    for j in range(k):
        for g in opt.param_groups:
            g["lr"] = lrs[j]
        x, y = batch(10 + j)  # distinct batches
        q = qnet(x, y)
        snaps.append(snapshot_params(student))
        xs.append(x)
        qs.append(q)
        soft_cross_entropy(student(x), q.detach()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    xc, yc = batch(5)
    _, g_w = clean_grad(student, dict(student.named_parameters()), None, xc, yc)
    return student, qnet, snaps, xs, qs, g_w, lrs


def _steps(lrs: list[float], names) -> list[Lookahead]:
    return [Lookahead.constant(lr, names) for lr in lrs]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_kstep_equals_sum_of_discounted_onestep_terms(reduction) -> None:
    """Eq. 11 with distinct batches: Σ_j η_j Π_{τ>j}(1 − η_τ) · (one-step term of batch j at snapshot j)."""
    student, qnet, snaps, xs, qs, g_w, lrs = _kstep_setup()
    alpha = list(qnet.parameters())
    sur, us = kstep_surrogate(student, snaps, None, xs, qs, g_w, _steps(lrs, g_w), reduction)
    got = torch.autograd.grad(sur, alpha, retain_graph=True)
    gamma = [(1 - lrs[1]) * (1 - lrs[2]) * lrs[0], (1 - lrs[2]) * lrs[1], lrs[2]]
    div = 3.0 if reduction == "mean" else 1.0  # equal batch sizes: the row mean is the mean of the step means
    expected = [torch.zeros_like(p) for p in alpha]
    for j in range(3):
        term, _ = onestep_surrogate(student, snaps[j], None, xs[j], qs[j], _steps([1.0], g_w)[0].scale(g_w))
        for e, g in zip(expected, torch.autograd.grad(term, alpha, retain_graph=True)):
            e.add_(g, alpha=gamma[j] / div)
    assert rel_err(list(got), expected) < 1e-12
    # the official code's pairing (JVP of batch j with the targets of another batch) gives something else
    bad = sum((us[j].detach() * qs[(j + 1) % 3]).sum() / 6 for j in range(3))
    assert rel_err(list(torch.autograd.grad(bad, alpha, retain_graph=True)), list(got)) > 1e-2


def test_kstep_k1_is_onestep_and_constant_lr_coefficients() -> None:
    student, qnet, snaps, xs, qs, g_w, lrs = _kstep_setup(k=1)
    sur_k, _ = kstep_surrogate(
        student, snaps, None, xs, qs, g_w, _steps(lrs, g_w)
    )  # k = 1: mean and sum agree
    sur_1, _ = onestep_surrogate(student, snaps[0], None, xs[0], qs[0], _steps(lrs, g_w)[0].scale(g_w))
    torch.testing.assert_close(sur_k, sur_1, rtol=1e-14, atol=0)
    eta = 0.02
    coefs = [c.eta["w"] for c in kstep_coefficients(_steps([eta] * 5, ["w"]))]
    assert coefs == pytest.approx([(1 - eta) ** (4 - j) * eta for j in range(5)])
    assert kstep_coefficients(_steps([eta] * 2, ["w"]))[0].eta["w"] == pytest.approx((1 - eta) * eta)


@pytest.mark.parametrize(
    "kw",
    [
        dict(lr=0.1),
        dict(lr=0.1, momentum=0.9, weight_decay=1e-3),
        dict(lr=0.1, momentum=0.9, dampening=0.3),
        dict(lr=0.1, momentum=0.5, nesterov=True),
    ],
)
def test_lookahead_mirrors_torch_sgd_and_its_eta(kw) -> None:
    net = mlp()
    opt = torch.optim.SGD(net.parameters(), **kw)
    live = dict(net.named_parameters())
    for step in range(3):
        x, y = batch(step)
        F.cross_entropy(net(x), y).backward()
        grads = {n: p.grad.clone() for n, p in live.items()}
        mirror = Lookahead.of(opt, live).step(snapshot_params(net), grads)
        eta = Lookahead.of(opt, live).eta
        bumped = Lookahead.of(opt, live).step(snapshot_params(net), {n: g + 1e-3 for n, g in grads.items()})
        for n in live:  # θ' is affine in the gradient with slope −η_eff
            torch.testing.assert_close((mirror[n] - bumped[n]) / 1e-3, torch.full_like(mirror[n], eta[n]))
        opt.step()
        opt.zero_grad(set_to_none=True)
        for n, p in live.items():
            torch.testing.assert_close(p.detach(), mirror[n], rtol=1e-13, atol=1e-15)
