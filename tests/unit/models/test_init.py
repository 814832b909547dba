from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
import timm
import torch

from lnl.errors import ConfigError
from lnl.methods.emlc import EMLC
from lnl.models.backbones import create_backbone
from lnl.models.init import load_matching_state


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_backbone("tiny_cnn", 4, in_chans=3)


def test_lightning_checkpoint_loads_the_backbone_but_not_the_classifier(tmp_path) -> None:
    donor, target = _net(0), _net(1)
    head = {k: v.clone() for k, v in target.get_classifier().state_dict().items()}
    projector = torch.nn.Linear(8, 8)
    state = {f"student.{k}": v for k, v in donor.state_dict().items()}
    state |= {f"projector.0.{k}": v for k, v in projector.state_dict().items()}  # a look-alike suffix
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "last.ckpt")
    counts = load_matching_state(str(tmp_path / "last.ckpt"), {"student": target})
    trunk = {k: v for k, v in donor.state_dict().items() if not k.startswith("fc.") and "head" not in k}
    assert counts == {"student": len(trunk)}
    own = target.state_dict()
    for k, v in trunk.items():
        assert torch.equal(own[k], v), k
    for k, v in target.get_classifier().state_dict().items():
        assert torch.equal(v, head[k])  # the classifier keeps its own initialization


def test_bad_init_checkpoints_fail_with_one_clear_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_matching_state(str(tmp_path / "missing.ckpt"), {"student": _net(0)})
    two = {f"student.{k}": v for k, v in _net(0).state_dict().items()}
    two |= {f"teacher.backbone.{k}": v for k, v in _net(1).state_dict().items()}
    torch.save(two, tmp_path / "two.pt")
    with pytest.raises(ConfigError, match="equally well"):
        load_matching_state(str(tmp_path / "two.pt"), {"student": _net(2)})


# ------------------------------------------------------------------ SupContrast / timm / plain state dicts
def _supcontrast_resnet(blocks: list[int], prefix: str, bottleneck: bool = False) -> dict[str, torch.Tensor]:
    """Random tensors under the exact state-dict keys and shapes of SupContrast's `SupConResNet` (github
    HobbitLong/SupContrast, networks/resnet_big.py): `encoder` = ResNet of BasicBlocks (3x3 stride-1 `conv1`,
    `bn1`, no max-pool, `layer1..4` of blocks `conv1 bn1 conv2 bn2 [shortcut.0 conv, shortcut.1 bn]`), `head` =
    Linear(512, 512), ReLU, Linear(512, 128). `prefix` is `encoder.module.` under its multi-GPU DataParallel.
    `bottleneck`: its Bottleneck blocks (`conv1` 1x1, `conv2` 3x3 with the stride, `conv3` 1x1 to 4x planes, each
    followed by `bn1..3`) and a 2048-wide head, as in its ResNet-50."""
    g = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}

    def conv(key: str, cout: int, cin: int, k: int) -> None:
        state[key + ".weight"] = torch.randn(cout, cin, k, k, generator=g)

    def bn(key: str, c: int) -> None:
        state[key + ".weight"], state[key + ".bias"] = torch.rand(c, generator=g), torch.randn(c, generator=g)
        state[key + ".running_mean"] = torch.randn(c, generator=g)
        state[key + ".running_var"] = torch.rand(c, generator=g) + 0.5
        state[key + ".num_batches_tracked"] = torch.tensor(7)

    conv(prefix + "conv1", 64, 3, 3)
    bn(prefix + "bn1", 64)
    cin = 64
    for layer, (planes, n) in enumerate(zip([64, 128, 256, 512], blocks), start=1):
        for j in range(n):
            stride = 2 if j == 0 and layer > 1 else 1
            block = f"{prefix}layer{layer}.{j}."
            conv(block + "conv1", planes, cin, 1 if bottleneck else 3)
            bn(block + "bn1", planes)
            conv(block + "conv2", planes, planes, 3)
            bn(block + "bn2", planes)
            cout = 4 * planes if bottleneck else planes
            if bottleneck:
                conv(block + "conv3", cout, planes, 1)
                bn(block + "bn3", cout)
            if stride != 1 or cin != cout:
                conv(block + "shortcut.0", cout, cin, 1)
                bn(block + "shortcut.1", cout)
            cin = cout
    head = [("head.0", cin, cin), ("head.2", 128, cin)]
    for key, cout, cin_ in head:
        state[key + ".weight"], state[key + ".bias"] = torch.randn(cout, cin_, generator=g), torch.randn(cout)
    return state


def _save_supcontrast(path: Path, model: dict[str, torch.Tensor]) -> Path:
    """SupContrast's `util.save_model` format: opt is the run's argparse.Namespace."""
    opt = argparse.Namespace(model="resnet34", dataset="cifar10", method="SimCLR", batch_size=1024,
                             learning_rate=0.5, temp=0.5, cosine=True, lr_decay_epochs=[700, 800, 900])  # fmt: skip
    optimizer = {
        "state": {},
        "param_groups": [{"lr": 0.5, "momentum": 0.9, "params": list(range(len(model)))}],
    }
    torch.save({"opt": opt, "model": model, "optimizer": optimizer, "epoch": 1000}, path)
    return path


def _emlc(init_checkpoint: str) -> EMLC:
    torch.manual_seed(1)
    return EMLC(num_classes=10, backbone="resnet34_cifar", init_checkpoint=init_checkpoint)


@pytest.mark.parametrize("prefix", ["encoder.module.", "encoder."])
def test_supcontrast_resnet34_simclr_checkpoint_loads_into_emlc_student_and_teacher(
    tmp_path: Path, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = _supcontrast_resnet([3, 4, 6, 3], prefix)
    path = _save_supcontrast(tmp_path / "last.pth", model)
    emlc = _emlc(str(path))
    nets = emlc.init_targets()
    heads = {
        n: {k: v.clone() for k, v in net.get_classifier().state_dict().items()} for n, net in nets.items()
    }
    with caplog.at_level(logging.INFO):
        counts = load_matching_state(str(path), nets)
    encoder = {k: v for k, v in model.items() if k.startswith(prefix)}
    for name, net in nets.items():
        own = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
        assert counts[name] == len(own) == len(encoder)  # EVERY backbone tensor matched, no more
        loaded = sorted(own.values(), key=lambda t: (t.shape, t.flatten()[:4].tolist()))
        given = sorted(encoder.values(), key=lambda t: (t.shape, t.flatten()[:4].tolist()))
        assert all(torch.equal(a, b) for a, b in zip(loaded, given))
        # the documented mapping, spot-checked: stem, a block's second bn, a projection shortcut's bn
        assert torch.equal(own["trunk.0.0.weight"], model[prefix + "conv1.weight"])
        assert torch.equal(own["trunk.1.4.body.4.running_var"], model[prefix + "layer2.1.bn2.running_var"])
        assert torch.equal(own["trunk.1.7.shortcut.1.weight"], model[prefix + "layer3.0.shortcut.1.weight"])
        assert torch.equal(own["trunk.1.15.body.3.weight"], model[prefix + "layer4.2.conv2.weight"])
        for k, v in net.get_classifier().state_dict().items():
            assert torch.equal(v, heads[name][k])  # the classifier keeps its own initialization
    assert f"loaded {len(encoder)}/{len(encoder)} student backbone tensors" in caplog.text
    assert f"loaded {len(encoder)}/{len(encoder)} teacher backbone tensors" in caplog.text
    # the same file through the method's own hook
    before = {k: v.clone() for k, v in emlc.teacher.backbone.state_dict().items()}
    emlc.load_init_checkpoint()
    assert torch.equal(emlc.student.state_dict()["trunk.0.0.weight"], model[prefix + "conv1.weight"])
    assert torch.equal(emlc.teacher.backbone.state_dict()["trunk.0.0.weight"], model[prefix + "conv1.weight"])
    assert torch.equal(emlc.teacher.backbone.state_dict()["fc.weight"], before["fc.weight"])


def test_wrong_architecture_fails_with_one_line_naming_key_and_shapes(tmp_path: Path) -> None:
    path = _save_supcontrast(tmp_path / "r18.pth", _supcontrast_resnet([2, 2, 2, 2], "encoder.module."))
    with pytest.raises(ConfigError) as info:
        load_matching_state(str(path), {"student": create_backbone("resnet34_cifar", 10)})
    message = str(info.value)
    assert "\n" not in message
    assert "encoder.module.layer2.0.conv1.weight has shape (128, 64, 3, 3)" in message
    assert "needs (64, 64, 3, 3)" in message
    torch.save({"head.bias": torch.zeros(3)}, tmp_path / "none.pt")  # nothing named like the target
    with pytest.raises(ConfigError, match="no key matches the student network"):
        load_matching_state(str(tmp_path / "none.pt"), {"student": torch.nn.Conv2d(1, 1, 1, bias=False)})


def test_pickled_objects_are_refused_without_unrestricted_unpickling(tmp_path: Path) -> None:
    torch.save({"model": _net(0).state_dict(), "fn": _Unsafe()}, tmp_path / "obj.pt")
    with pytest.raises(ConfigError, match="weights_only=True") as info:
        load_matching_state(str(tmp_path / "obj.pt"), {"student": _net(1)})
    assert "\n" not in str(info.value)


class _Unsafe:
    pass


def test_plain_state_dict_loads(tmp_path: Path) -> None:
    donor, target = _net(0), _net(1)
    torch.save(donor.state_dict(), tmp_path / "plain.pt")
    counts = load_matching_state(str(tmp_path / "plain.pt"), {"student": target})
    trunk = {k: v for k, v in donor.state_dict().items() if not k.startswith("fc.")}
    assert counts == {"student": len(trunk)}
    assert all(torch.equal(target.state_dict()[k], v) for k, v in trunk.items())


def test_timm_imagenet_resnet50_state_dict_loads_and_supcontrast_shortcut_maps_to_downsample(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    donor = timm.create_model("resnet50", pretrained=False, num_classes=1000)  # ImageNet layout, fc 1000-way
    torch.save(donor.state_dict(), tmp_path / "resnet50.pth")
    target = create_backbone("resnet50", 14)
    head = {k: v.clone() for k, v in target.get_classifier().state_dict().items()}
    counts = load_matching_state(str(tmp_path / "resnet50.pth"), {"student": target})
    trunk = {k: v for k, v in donor.state_dict().items() if not k.startswith("fc.")}
    assert counts == {"student": len(trunk)}
    assert all(torch.equal(target.state_dict()[k], v) for k, v in trunk.items())
    assert all(torch.equal(target.get_classifier().state_dict()[k], v) for k, v in head.items())
    # a SupContrast ResNet-50 (`shortcut.0/1` where timm has `downsample.0/1`) into the same timm network
    supcon = {"encoder." + k.replace("downsample.", "shortcut."): v for k, v in trunk.items()}
    _save_supcontrast(tmp_path / "supcon50.pth", supcon)
    counts = load_matching_state(str(tmp_path / "supcon50.pth"), {"student": create_backbone("resnet50", 14)})
    assert counts == {"student": len(trunk)}


def test_supcontrast_resnet50_checkpoint_loads_into_resnet50_cifar(tmp_path: Path) -> None:
    """Bottleneck blocks: `conv1/bn1/conv2/bn2/conv3/bn3` -> `body.0/1/3/4/6/7` (the cifar100 SimCLR backbone)."""
    model = _supcontrast_resnet([3, 4, 6, 3], "encoder.", bottleneck=True)
    path = _save_supcontrast(tmp_path / "r50.pth", model)
    target = create_backbone("resnet50_cifar", 100)
    counts = load_matching_state(str(path), {"student": target})
    encoder = [k for k in model if k.startswith("encoder.")]
    assert counts == {"student": len(encoder)} and len(encoder) == len(target.state_dict()) - 2  # all but fc
    own = target.state_dict()
    assert torch.equal(own["trunk.1.3.body.6.weight"], model["encoder.layer2.0.conv3.weight"])
    assert torch.equal(
        own["trunk.1.3.shortcut.1.running_mean"], model["encoder.layer2.0.shortcut.1.running_mean"]
    )
    assert torch.equal(own["trunk.1.15.body.7.bias"], model["encoder.layer4.2.bn3.bias"])


def test_torchvision_imagenet_resnet50_state_dict_loads_into_resnet50(tmp_path: Path) -> None:
    """The README's torchvision ImageNet weights: `torchvision.models.resnet50().state_dict()` saved as a plain
    `.pth` (the file torchvision downloads) fills every trunk tensor of lnl's ResNet-50; the classifier stays."""
    import torchvision

    torch.manual_seed(0)
    donor = torchvision.models.resnet50(weights=None)  # ImageNet layout, fc 1000-way
    torch.save(donor.state_dict(), tmp_path / "resnet50-0676ba61.pth")
    target = create_backbone("resnet50", 14)
    head = {k: v.clone() for k, v in target.get_classifier().state_dict().items()}
    counts = load_matching_state(str(tmp_path / "resnet50-0676ba61.pth"), {"student": target})
    trunk = {k: v for k, v in donor.state_dict().items() if not k.startswith("fc.")}
    assert counts == {"student": len(trunk)} and len(trunk) == len(target.state_dict()) - 2
    assert all(torch.equal(target.state_dict()[k], v) for k, v in trunk.items())
    assert all(torch.equal(target.get_classifier().state_dict()[k], v) for k, v in head.items())
