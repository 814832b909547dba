"""EMLC end to end on synthetic batches: exactness of jvp vs unrolled, k-step, diagnostics, init, configs.

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
from lnl.errors import ConfigError
from lnl.hypergrad import functional_forward
from lnl.methods.emlc import EMLC
from lnl.models.backbones import features_and_logits


def emlc(**kw):
    opts = dict(num_classes=4, backbone="tiny_cnn", optimizer=sgd(0.1), teacher_optimizer=sgd(0.05, 0.0, 0.0))
    return lambda: EMLC(**(opts | kw))


@pytest.mark.parametrize(
    "extra", [{}, {"mix_gold": True, "corruption": "adversarial"}], ids=["plain", "gold_adv"]
)
def test_jvp_equals_unrolled_through_the_method(extra) -> None:
    """Float64, BatchNorm backbone, momentum SGD: the whole step with `jvp` = with `unrolled` (Prop. 1, Eq. 10)."""
    runs = {
        h: fit(emlc(k=1, hypergrad=h, **extra), precision="64-true", data=SynthData(2))
        for h in ("jvp", "unrolled")
    }
    a, b = state(runs["jvp"]), state(runs["unrolled"])
    assert max_rel_diff(a, b) < 1e-8
    seed_everything(0, verbose=False)  # the same initialization as the fits
    teacher = {
        n: p.detach() for n, p in emlc(**extra)().double().named_parameters() if n.startswith("teacher.")
    }
    assert max_rel_diff(teacher, b) > 1e-3  # the teacher's parameters moved (not a vacuous comparison)


@pytest.mark.parametrize("hypergrad", ["jvp", "unrolled"])
def test_one_step_is_the_official_meta_step_written_out(hypergrad) -> None:
    """Float64, plain SGD for both networks, k = 1: the official EMLC step (teacher CE on the clean batch; q =
    w·onehot(ỹ) + (1 − w)·softmax(teacher logits), w = sigmoid(gate([h, E(ỹ)])) (Fig. 3); a differentiable SGD step
    of the student on softCE(S(x), q); CE of the stepped student on the clean batch differentiated w.r.t. the
    teacher through that step (Eq. 10); one teacher step on CE + meta-gradient; the student's real step), written
    out with second-order autograd through a functional student step, equals the method's step."""
    make = emlc(k=1, hypergrad=hypergrad, optimizer=sgd(0.1, 0.0, 0.0))
    model = fit(make, precision="64-true", data=SynthData(1))
    seed_everything(0, verbose=False)
    ref = make().double().train()
    start = {n: p.detach().clone() for n, p in ref.named_parameters()}
    b = make_batch(0, 8, 8)
    x, y, xc, yc = b.noisy.x.double(), b.noisy.y, b.clean.x.double(), b.clean.y
    teacher = ref.teacher
    t_params = list(teacher.parameters())
    supervised = F.cross_entropy(features_and_logits(teacher.backbone, xc)[1], yc)
    h, t_logits = features_and_logits(teacher.backbone, x)
    w = torch.sigmoid(teacher.gate(torch.cat([h, teacher.embedding(y)], dim=1)).squeeze(1))[:, None]
    q = w * F.one_hot(y, 4).double() + (1 - w) * F.softmax(t_logits, dim=1)
    live = dict(ref.student.named_parameters())
    student_loss = -(q * F.log_softmax(ref.student(x), dim=1)).sum(1).mean()
    grads = torch.autograd.grad(student_loss, list(live.values()), create_graph=True)
    virtual = {n: p - 0.1 * g for (n, p), g in zip(live.items(), grads)}
    clean = F.cross_entropy(functional_forward(ref.student, virtual, None, xc), yc)
    meta = torch.autograd.grad(clean, t_params, retain_graph=True, allow_unused=True)
    sup = torch.autograd.grad(supervised, t_params, allow_unused=True)
    with torch.no_grad():
        for p, g_meta, g_sup in zip(t_params, meta, sup):
            p.sub_(0.05 * sum(g for g in (g_meta, g_sup) if g is not None))
        for p, g in zip(live.values(), grads):
            p.sub_(0.1 * g)
    assert max_rel_diff(state(model), state(ref)) < 1e-10
    gate = {k: v for k, v in state(ref).items() if k.startswith("teacher.gate.")}
    assert max_rel_diff(gate, start) > 1e-6  # the gate learns from the meta-gradient alone


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_k_step_meta_gradient_is_eq_8_written_out(reduction) -> None:
    """Float64, plain SGD, k = 2: the teacher's step equals Eq. 8 written out, ∇_α ≈ −η g_wᵀ Σ_τ γ^{t−τ} H_{wα}^{(τ)}
    with γ = 1 − η (÷ k for `mean`): H_{wα}^{(τ)} = ∂²softCE(S(x_τ; θ_τ), q_τ(α))/∂θ∂α at the student of step τ,
    g_w = ∇CE of the last student on the closing step's clean batch; plus the teacher's CE on that clean batch."""
    eta, k = 0.1, 2
    make = emlc(k=k, kstep_reduction=reduction, optimizer=sgd(eta, 0.0, 0.0))
    model = fit(make, precision="64-true", data=SynthData(k))
    seed_everything(0, verbose=False)
    ref = make().double().train()
    teacher, student = ref.teacher, ref.student
    t_params, live = list(teacher.parameters()), dict(student.named_parameters())
    hessian_terms, sup = [], None
    for j in range(k):
        b = make_batch(j, 8, 8)
        x, y, xc, yc = b.noisy.x.double(), b.noisy.y, b.clean.x.double(), b.clean.y
        if j == k - 1:  # the closing step: the teacher's CE on its clean batch, then the meta-gradient
            sup = F.cross_entropy(features_and_logits(teacher.backbone, xc)[1], yc)
        h, t_logits = features_and_logits(teacher.backbone, x)
        w = torch.sigmoid(teacher.gate(torch.cat([h, teacher.embedding(y)], dim=1)).squeeze(1))[:, None]
        q = w * F.one_hot(y, 4).double() + (1 - w) * F.softmax(t_logits, dim=1)
        theta = {n: p.detach().clone().requires_grad_(True) for n, p in live.items()}
        student(x)  # the real forward (BN running statistics); the graph below is at the snapshot θ_j
        loss = -(q * F.log_softmax(functional_forward(student, theta, None, x), dim=1)).sum(1).mean()
        grads = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
        hessian_terms.append(grads)
        with torch.no_grad():
            for p, g in zip(live.values(), grads):
                p.sub_(eta * g)
    clean = F.cross_entropy(functional_forward(student, dict(live), None, xc), yc)
    g_w = torch.autograd.grad(clean, list(live.values()))
    gamma = 1.0 - eta
    surrogate = sum(
        -eta * gamma ** (k - 1 - j) * sum((gw * g).sum() for gw, g in zip(g_w, grads))
        for j, grads in enumerate(hessian_terms)
    ) / (k if reduction == "mean" else 1)
    meta = torch.autograd.grad(surrogate, t_params, allow_unused=True)
    sup_grads = torch.autograd.grad(sup, t_params, allow_unused=True)
    with torch.no_grad():
        for p, g_meta, g_sup in zip(t_params, meta, sup_grads):
            p.sub_(0.05 * sum(g for g in (g_meta, g_sup) if g is not None))
    assert max_rel_diff(state(model), state(ref)) < 1e-10


@pytest.mark.parametrize(
    "extra", [{}, {"mix_gold": True, "corruption": "adversarial"}], ids=["plain", "gold_adv"]
)
def test_recomputed_kstep_targets_give_the_kept_graphs_trajectory(extra) -> None:
    """`kstep_targets: recompute` rebuilds q_j at the meta step (BN frozen): same parameters and BN statistics."""
    runs = {
        t: state(fit(emlc(k=3, kstep_targets=t, **extra), precision="64-true", data=SynthData(5)))
        for t in ("keep", "recompute")
    }
    assert max_rel_diff(runs["recompute"], runs["keep"]) < 1e-12
    counts = {k: v for k, v in runs["keep"].items() if k.endswith("num_batches_tracked")}
    assert counts and all(torch.equal(runs["recompute"][k], v) for k, v in counts.items())
    assert int(counts["teacher.backbone.trunk.1.num_batches_tracked"]) == 5 + 2  # 5 noisy forwards + 2 clean


def test_label_recovery_and_gate_diagnostics_are_epoch_means() -> None:
    """A gate pinned open (w ≈ 1, q = onehot ỹ): recovery = share of right labels, wrong labels never recovered."""

    def pinned():
        model = emlc(k=1, teacher_optimizer=sgd(0.0, 0.0, 0.0))()
        torch.nn.init.constant_(model.teacher.gate[-1].bias, 50.0)
        return model

    model = fit(pinned, data=SynthData(3))
    batches = [make_batch(i, 8, 8).noisy for i in range(3)]
    right = torch.cat([b.y == b.y_true for b in batches]).float().mean()
    logged = model.trainer.callback_metrics
    torch.testing.assert_close(logged["train/label_recovery"], right)
    assert logged["train/wrong_label_recovery"] == 0.0
    assert logged["train/gate_right_label"] > 0.999 and logged["train/gate_wrong_label"] > 0.999


def test_k_step_cycle_steps_the_teacher_once_and_the_epochs_last_batch_closes_it() -> None:
    """k = 3 with 2 batches: two student steps, then one teacher step (k = 1: shared one-step-per-network test)."""
    adam = lambda p: torch.optim.Adam(p, lr=1e-3)  # noqa: E731  (Adam counts its steps)
    model = fit(emlc(k=3, optimizer=adam, teacher_optimizer=adam), data=SynthData(2))
    s_opt, t_opt = (o.optimizer for o in model.optimizers())
    assert {int(s["step"]) for s in s_opt.state.values()} == {2}
    assert {int(s["step"]) for s in t_opt.state.values()} == {1}
    assert model._pending == []


def test_kstep_method_pairs_each_batch_with_its_own_targets(monkeypatch) -> None:
    """Inside the method, the k-step meta term gets snapshot j, batch j and batch j's own q_j (Eq. 11)."""
    import lnl.hypergrad.estimators as mod

    seen = {}
    real = mod.kstep_surrogate

    def spy(module, snaps, buffers, xs, qs, g_w, lrs, reduction, denoms):
        seen.update(xs=[x.clone() for x in xs], qs=[q.detach().clone() for q in qs], snaps=snaps, lrs=lrs)
        return real(module, snaps, buffers, xs, qs, g_w, lrs, reduction, denoms)

    monkeypatch.setattr(mod, "kstep_surrogate", spy)
    make = emlc(k=3, kstep_reduction="mean")
    model = fit(make, data=SynthData(3))
    seed_everything(0, verbose=False)
    teacher0 = make().teacher.train()  # the teacher during the cycle (it is updated only at its end)
    for j in range(3):
        nb = make_batch(j, 8, 8).noisy
        assert torch.equal(seen["xs"][j], nb.x)
        with torch.no_grad():
            h, logits = teacher0.features_and_logits(nb.x)
            torch.testing.assert_close(seen["qs"][j], teacher0.correct(h, logits, nb.y)[0])
    assert not torch.equal(seen["snaps"][0]["fc.weight"], seen["snaps"][2]["fc.weight"])
    assert set(seen["snaps"][0]) == set(dict(model.student.named_parameters()))
    assert seen["lrs"][0].eta["fc.weight"] == pytest.approx(0.1)  # η read from the student's optimizer


def test_bad_options_are_config_errors() -> None:
    for kw, message in (
        ({"k": 0}, "model.k = 0: must be >= 1"),
        ({"k": 2, "hypergrad": "unrolled"}, r"model.k = 2: .*<= 1 with hypergrad: unrolled"),
        ({"corruption": "bogus"}, "model.corruption = 'bogus': allowed values are none, random, adversarial"),
        ({"kstep_reduction": "max"}, "model.kstep_reduction = 'max': allowed values are"),
    ):
        with pytest.raises(ConfigError, match=message):
            emlc(**kw)()


def test_init_checkpoint_is_strict(tmp_path, capsys) -> None:
    donor = emlc()()
    good = tmp_path / "ssl.pt"
    torch.save(
        {"state_dict": {f"module.encoder.{k}": v for k, v in donor.student.trunk.state_dict().items()}}, good
    )
    model = emlc(init_checkpoint=str(good))()
    model.load_init_checkpoint()
    for k, v in donor.student.trunk.state_dict().items():
        assert torch.equal(model.student.trunk.state_dict()[k], v)
        assert torch.equal(model.teacher.backbone.trunk.state_dict()[k], v)
    torch.save({"other.thing": torch.zeros(3)}, tmp_path / "none.pt")
    with pytest.raises(ConfigError, match="no key matches"):
        emlc(init_checkpoint=str(tmp_path / "none.pt"))().load_init_checkpoint()
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "shape.pt")
    with pytest.raises(ConfigError, match="shape"):
        emlc(init_checkpoint=str(tmp_path / "shape.pt"))().load_init_checkpoint()


def test_configs_cover_the_table_and_bind() -> None:
    names = {p.stem for p in CONFIGS.glob("emlc_*.yaml")}
    for ds, rates in (("cifar10", (20, 50, 80, 90)), ("cifar100", (20, 50, 80, 90))):
        for r in rates:
            assert {f"emlc_{ds}_unif{r}", f"emlc_{ds}_unif{r}_k5"} <= names
    assert {"emlc_cifar10_asym40", "emlc_cifar10_asym40_k5", "emlc_clothing1m"} <= names
    sig = inspect.signature(EMLC.__init__)
    for name in names:
        cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
        assert cfg["model"]["class_path"] == "lnl.methods.EMLC"
        sig.bind(None, 10, **cfg["model"]["init_args"])
        data, model = cfg["data"]["init_args"], cfg["model"]["init_args"]
        if data["dataset"] == "clothing1m":  # predefined clean train / val lists
            assert model["corruption"] == "adversarial" and model["mix_gold"] is True
        else:  # clean set plus a disjoint clean validation set of the same size
            assert data["val_labels"] == "clean" and data["val_per_class"] == data["clean_per_class"] > 0
        assert cfg["model"]["init_args"]["k"] == (5 if name.endswith("_k5") else 1)
