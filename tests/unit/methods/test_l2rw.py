"""L2RW end to end on synthetic batches: jvp = unrolled, Alg. 1 written out, options, weight diagnostics,
configs. What every method shares (fp16 refused, one step per network, resume, bf16, y_true unused, DDP)
is in test_shared_properties.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import seed_everything

from helpers.synthetic import SynthData, fit, float64_one_step, max_rel_diff, sgd, state
from lnl.hypergrad import functional_forward
from lnl.methods import L2RW


def l2rw(**kw):
    return lambda: L2RW(**(dict(num_classes=4, backbone="tiny_cnn", optimizer=sgd(0.1)) | kw))


@pytest.mark.parametrize("virtual_step", ["sgd", "optimizer"])
def test_jvp_equals_unrolled_through_the_method(virtual_step) -> None:
    """Float64, BatchNorm student, momentum SGD with weight decay: identical trajectories (to 1e-8)."""
    models = {
        h: fit(l2rw(hypergrad=h, virtual_step=virtual_step), precision="64-true", data=SynthData(3))
        for h in ("jvp", "unrolled")
    }
    runs = {h: state(m) for h, m in models.items()}
    assert max_rel_diff(runs["jvp"], runs["unrolled"]) < 1e-8
    for model in models.values():  # some weight > 0: not two weight-decay-only trajectories
        assert model.trainer.callback_metrics["train/weight_positive"] > 0
    seed_everything(0, verbose=False)
    start = {n: p.detach() for n, p in l2rw()().double().named_parameters()}
    assert max_rel_diff(start, runs["unrolled"]) > 1e-3  # well beyond the decay alone (3 steps of 5e-5)


def test_one_step_is_algorithm_1() -> None:
    """Float64, plain SGD: ε-gradient through the virtual step at ε = 0, rectified and normalized weights, then
    the real step on the weighted loss, written out by hand."""
    make = l2rw(optimizer=sgd(0.1, 0.0, 0.0))
    model, ref, b = float64_one_step(make)
    x, y, xc, yc = b.noisy.x.double(), b.noisy.y, b.clean.x.double(), b.clean.y
    live = dict(ref.student.named_parameters())
    losses = F.cross_entropy(ref.student(x), y, reduction="none")
    eps = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    grads = torch.autograd.grad((eps * losses).mean(), list(live.values()), create_graph=True)
    virtual = {n: p - 0.1 * g for (n, p), g in zip(live.items(), grads)}
    clean = F.cross_entropy(functional_forward(ref.student, virtual, None, xc), yc)
    (eps_grad,) = torch.autograd.grad(clean, [eps])
    w = torch.clamp(-eps_grad, min=0)
    w = w / w.sum()
    assert (w == 0).any() and (w > 0).any()
    grads = torch.autograd.grad((w * losses).sum(), list(live.values()))
    with torch.no_grad():
        for p, g in zip(live.values(), grads):
            p.sub_(0.1 * g)
    assert max_rel_diff(state(model), state(ref)) < 1e-10


def test_dropout_shares_its_mask_between_the_lookahead_and_the_real_step(monkeypatch) -> None:
    """L2RW's WRN dropout 0.3: `jvp` re-runs the noisy forward for its JVP, `unrolled` reuses it; with one mask
    per step and batch both differentiate the same network (identical runs); with per-forward masks they differ."""
    from lnl.models.layers import StepDropout

    def run(h: str) -> dict[str, torch.Tensor]:
        make = l2rw(hypergrad=h, backbone="wrn28_2", backbone_kwargs={"drop_rate": 0.3})
        return state(fit(make, precision="64-true", data=SynthData(2)))

    assert max_rel_diff(run("jvp"), run("unrolled")) < 1e-8
    monkeypatch.setattr(StepDropout, "forward", lambda self, x: F.dropout(x, self.p, self.training))
    assert max_rel_diff(run("jvp"), run("unrolled")) > 1e-3  # a fresh mask per forward: another network
