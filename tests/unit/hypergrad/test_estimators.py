"""The soft-target estimators by name: `jvp` equals an autograd derivation through the optimizer's step (float64),
also for `mix_gold`'s student loss (the sum of a noisy mean and a gold mean, official EMLC/MLC `meta.py`)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from helpers.nets import C, QNet, batch, bn_net, rel_err
from lnl.errors import ConfigError
from lnl.hypergrad import Lookahead, functional_forward, named_params
from lnl.hypergrad.estimators import SOFT_TARGETS, WEIGHTS, create_hypergrad, student_loss
from lnl.losses import soft_cross_entropy


def test_mix_gold_student_loss_is_the_sum_of_two_means():
    logits, q = torch.randn(10, C, dtype=torch.float64), torch.rand(10, C, dtype=torch.float64).softmax(-1)
    expect = soft_cross_entropy(logits[:6], q[:6]) + soft_cross_entropy(logits[6:], q[6:])
    assert torch.allclose(student_loss(logits, q, 6), expect)
    assert torch.allclose(student_loss(logits, q, 10), soft_cross_entropy(logits, q))


@pytest.mark.parametrize("gold", [0, 4], ids=["plain", "mix_gold"])
def test_jvp_meta_gradient_equals_autograd_through_the_momentum_sgd_step(gold: int):
    net, qnet = bn_net(), QNet().double()
    x, y = batch(0, 6)
    xg, yg = batch(1, gold) if gold else (x[:0], y[:0])
    clean = batch(2, 5)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    warm = F.cross_entropy(net(x), y)  # a momentum buffer exists: the step is not plain SGD
    warm.backward()
    opt.step()
    opt.zero_grad()
    x_s = torch.cat([x, xg])
    state = {n: p.detach().clone() for n, p in net.named_parameters()}
    saved = copy.deepcopy(opt.state_dict())

    def meta_grad(name: str):
        with torch.no_grad():
            for n, p in net.named_parameters():
                p.copy_(state[n])
        opt.load_state_dict(copy.deepcopy(saved))
        named = named_params(net)
        q = qnet(x, y)
        targets = torch.cat([q, F.one_hot(yg, C).double()])
        est = create_hypergrad(name, SOFT_TARGETS)
        step = est.student_step(net, Lookahead.of(opt, named), functional_forward(net, named, None, x_s), targets,
                                list(qnet.parameters()), clean, x_s, len(q))  # fmt: skip
        for p, g in zip(net.parameters(), step.grads):
            p.grad = g
        opt.step()  # the real step the meta-gradient is taken through
        opt.zero_grad()
        return est.meta_gradient(net, [step], list(qnet.parameters()), clean).grads

    jvp, unrolled = meta_grad("jvp"), meta_grad("unrolled")
    assert rel_err(list(jvp), list(unrolled)) < 1e-8
    assert max(float(g.abs().max()) for g in unrolled) > 1e-6  # not a vacuous comparison


def test_estimators_are_picked_by_name_and_a_bad_name_is_one_line():
    assert {type(create_hypergrad(n, SOFT_TARGETS)).__name__ for n in SOFT_TARGETS} == {
        "JVPSoftTargets", "UnrolledSoftTargets"}  # fmt: skip
    assert set(WEIGHTS) == {"jvp", "unrolled"}
    with pytest.raises(ConfigError, match="model.hypergrad = 'adjoint': allowed values are jvp, unrolled"):
        create_hypergrad("adjoint", WEIGHTS)
