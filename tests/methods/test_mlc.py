"""MLC: the JVP meta step equals the faithful second-order (unrolled) one; meta-net; configs.

What every method shares (fp16 refused, one step per network, resume, bf16, y_true unused, DDP) is in
test_shared_properties.py.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml

from helpers.synthetic import SynthData, fit, max_rel_diff, sgd, state
from lnl.methods.mlc import MLC
from lnl.models.teachers import MetaLabelNet

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


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
    assert max_rel_diff(state(mlc(**extra)().double()), runs["unrolled"]) > 1e-4


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
