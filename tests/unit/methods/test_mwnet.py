"""MW-Net end to end on synthetic batches: jvp = unrolled, the official step order, options, weight
diagnostics, configs. What every method shares (fp16 refused, one step per network, resume, bf16, y_true
unused, DDP) is in test_shared_properties.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import seed_everything

from helpers.synthetic import SynthData, fit, float64_one_step, max_rel_diff, sgd, state
from lnl.hypergrad import functional_forward
from lnl.methods import MWNet


def mwnet(**kw):
    opts = dict(num_classes=4, backbone="tiny_cnn", optimizer=sgd(0.1), meta_optimizer=sgd(0.5, 0.0, 0.0))
    return lambda: MWNet(**(opts | kw))


@pytest.mark.parametrize(
    "extra", [{}, {"virtual_step": "optimizer", "normalize": True}], ids=["sgd", "optimizer_normalized"]
)
def test_jvp_equals_unrolled_through_the_method(extra) -> None:
    """Float64, BatchNorm student, momentum SGD with weight decay, SGD meta-optimizer: identical trajectories."""
    runs = {
        h: state(fit(mwnet(hypergrad=h, **extra), precision="64-true", data=SynthData(2)))
        for h in ("jvp", "unrolled")
    }
    assert max_rel_diff(runs["jvp"], runs["unrolled"]) < 1e-8
    seed_everything(0, verbose=False)
    start = state(mwnet(**extra)().double())
    moved = {k: v for k, v in start.items() if k.startswith("vnet.")}
    assert max_rel_diff(moved, runs["unrolled"]) > 1e-6  # the weighting net did move


def test_one_step_is_virtual_step_then_weight_net_step_then_real_step_with_the_updated_net() -> None:
    """Float64, plain SGD for both networks: the method's step equals the official order written out by hand."""
    make = mwnet(optimizer=sgd(0.1, 0.0, 0.0))
    model, ref, b = float64_one_step(make)
    x, y, xc, yc = b.noisy.x.double(), b.noisy.y, b.clean.x.double(), b.clean.y
    live = dict(ref.student.named_parameters())
    losses = F.cross_entropy(ref.student(x), y, reduction="none")
    grads = torch.autograd.grad((ref.vnet(losses) * losses).mean(), list(live.values()), create_graph=True)
    virtual = {n: p - 0.1 * g for (n, p), g in zip(live.items(), grads)}
    clean = F.cross_entropy(functional_forward(ref.student, virtual, None, xc), yc)
    v_grads = torch.autograd.grad(clean, list(ref.vnet.parameters()))
    old_w = ref.vnet(losses).detach()
    with torch.no_grad():
        for p, g in zip(ref.vnet.parameters(), v_grads):
            p.sub_(0.5 * g)
    new_w = ref.vnet(losses).detach()
    assert (new_w - old_w).abs().max() > 1e-6
    grads = torch.autograd.grad((new_w * losses).mean(), list(live.values()))
    with torch.no_grad():
        for p, g in zip(live.values(), grads):
            p.sub_(0.1 * g)
    assert max_rel_diff(state(model), state(ref)) < 1e-10
