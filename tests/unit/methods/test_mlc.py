"""MLC: the JVP meta step equals the faithful second-order (unrolled) one; meta-net; configs.

What every method shares (fp16 refused, one step per network, resume, bf16, y_true unused, DDP) is in
test_shared_properties.py.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch import seed_everything

from helpers.paths import CONFIGS
from helpers.synthetic import SynthData, fit, make_batch, max_rel_diff, sgd, state
from lnl.hypergrad import functional_forward
from lnl.methods.mlc import MLC
from lnl.models.backbones import features_and_logits
from lnl.models.teachers import MetaLabelNet


def mlc(**kw):
    return lambda: MLC(**(dict(num_classes=4, backbone="tiny_cnn", optimizer=sgd(0.1)) | kw))


@pytest.mark.parametrize("extra", [{}, {"skip": True, "mix_gold": True}], ids=["plain", "skip_gold"])
def test_jvp_equals_unrolled_through_the_method(extra) -> None:
    """Float64, BatchNorm student, momentum SGD, Adam meta-optimizer: identical trajectories (to 1e-8)."""
    runs = {
        h: state(fit(mlc(hypergrad=h, **extra), precision="64-true", data=SynthData(2)))
        for h in ("jvp", "unrolled")
    }
    assert max_rel_diff(runs["jvp"], runs["unrolled"]) < 1e-8
    seed_everything(0, verbose=False)  # the same initialization as the fits
    start = {n: p.detach() for n, p in mlc(**extra)().double().meta_net.named_parameters()}
    assert max_rel_diff({f"meta_net.{k}": v for k, v in start.items()}, runs["unrolled"]) > 1e-4


@pytest.mark.parametrize("hypergrad", ["jvp", "unrolled"])
def test_one_step_is_the_official_meta_step_written_out(hypergrad) -> None:
    """Float64, plain SGD for both networks: the official MLC step (q = softmax(meta-net([sg h_S(x), E(ỹ)])); a
    differentiable SGD step of the student on softCE(S(x), q); CE of the stepped student on the clean batch
    differentiated w.r.t. the meta-net through that step; the student's real step; one meta-net step), written out
    with second-order autograd through a functional student step, equals the method's step."""
    make = mlc(hypergrad=hypergrad, optimizer=sgd(0.1, 0.0, 0.0), meta_optimizer=sgd(0.5, 0.0, 0.0))
    model = fit(make, precision="64-true", data=SynthData(1))
    seed_everything(0, verbose=False)
    ref = make().double().train()
    start = {n: p.detach().clone() for n, p in ref.meta_net.named_parameters()}
    b = make_batch(0, 8, 8)
    x, y, xc, yc = b.noisy.x.double(), b.noisy.y, b.clean.x.double(), b.clean.y
    live, meta_params = dict(ref.student.named_parameters()), list(ref.meta_net.parameters())
    h, logits = features_and_logits(ref.student, x)
    q = F.softmax(ref.meta_net.net(torch.cat([h.detach(), ref.meta_net.embedding(y)], dim=1)), dim=1)
    student_loss = -(q * F.log_softmax(logits, dim=1)).sum(1).mean()
    grads = torch.autograd.grad(student_loss, list(live.values()), create_graph=True)
    virtual = {n: p - 0.1 * g for (n, p), g in zip(live.items(), grads)}
    clean = F.cross_entropy(functional_forward(ref.student, virtual, None, xc), yc)
    meta = torch.autograd.grad(clean, meta_params)
    with torch.no_grad():
        for p, g in zip(live.values(), grads):
            p.sub_(0.1 * g)
        for p, g in zip(meta_params, meta):
            p.sub_(0.5 * g)
    assert max_rel_diff(state(model), state(ref)) < 1e-10
    moved = state(ref.meta_net)
    assert max_rel_diff(moved, start) > 1e-6  # the meta-net learns (from the meta-gradient alone)


def test_meta_net_outputs_distributions_and_detaches_features() -> None:
    net = MetaLabelNet(feature_dim=6, num_classes=4, skip=True)
    h = torch.randn(5, 6, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0])
    q = net(h, y)
    torch.testing.assert_close(q.sum(1), torch.ones(5))
    assert (q >= 0).all()
    q.sum().backward()
    assert h.grad is None and net.embedding.weight.grad is not None


def test_configs_bind() -> None:
    names = {p.stem for p in CONFIGS.glob("mlc_*.yaml")}
    for ds in ("cifar10", "cifar100"):
        assert {f"mlc_{ds}_unif{r}" for r in (20, 50, 80, 90)} <= names
    assert "mlc_cifar10_asym40" in names
    sig = inspect.signature(MLC.__init__)
    for name in names:
        cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
        assert cfg["model"]["class_path"] == "lnl.methods.MLC"
        sig.bind(None, 10, **cfg["model"]["init_args"])
