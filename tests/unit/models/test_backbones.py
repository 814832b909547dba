from __future__ import annotations

import pytest
import timm
import torch

from lnl.errors import ConfigError
from lnl.models.backbones import create_backbone, features_and_logits

SMALL = ["resnet32_cifar", "preact_resnet18_cifar", "wrn28_2", "tiny_cnn", "tiny_mlp"]


@pytest.mark.parametrize("name", SMALL)
def test_forward_shapes_and_features(name: str) -> None:
    model = create_backbone(name, num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    features, logits = features_and_logits(model, x)
    assert features.shape == (2, model.num_features)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(logits, model(x))


@pytest.mark.parametrize(
    ("name", "millions"),
    [
        ("resnet32_cifar", 0.46),
        ("wrn28_2", 1.47),
        ("wrn28_10", 36.5),
        ("resnet34_cifar", 21.3),
        ("resnet50_cifar", 23.5),
    ],
)
def test_parameter_counts_match_the_literature(name: str, millions: float) -> None:
    model = create_backbone(name, num_classes=10)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert count == pytest.approx(millions, rel=0.03)


def test_registered_in_timm_and_any_timm_model_works() -> None:
    assert timm.is_model("wrn28_10") and timm.is_model("digits_cnn")
    model = create_backbone("resnet18", num_classes=3)  # a timm ImageNet model, random init
    features, logits = features_and_logits(model.eval(), torch.randn(1, 3, 64, 64))
    assert features.shape == (1, 512) and logits.shape == (1, 3)


def test_digits_cnn_takes_one_channel_8x8() -> None:
    model = create_backbone("digits_cnn", num_classes=10, in_chans=1)
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_bad_names_and_pretrained_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="backbone = 'resnet9000'"):
        create_backbone("resnet9000", num_classes=10)
    with pytest.raises(ConfigError, match="pretrained"):
        create_backbone("resnet32_cifar", num_classes=10, pretrained=True)


def test_option_a_shortcut_subsamples_and_zero_pads_channels() -> None:
    """MW-Net's ResNet-32 (`shortcut: A`): x[:, :, ::2, ::2] with (cout − cin)/2 zero channels on each side."""
    from lnl.models.backbones import BasicBlock

    block = BasicBlock(16, 32, stride=2, shortcut="A")
    x = torch.randn(3, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (3, 32, 4, 4)
    assert (out[:, :8] == 0).all() and (out[:, 24:] == 0).all()
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    a = create_backbone("resnet32_cifar", num_classes=10, shortcut="A")
    b = create_backbone("resnet32_cifar", num_classes=10)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(b) - count(a) == 16 * 32 + 32 * 64 + 2 * (32 + 64)  # no projection convs / BN in option A
    assert a(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="shortcut"):
        create_backbone("resnet32_cifar", num_classes=10, shortcut="C")


def test_he_normal_init_has_the_fan_in_std() -> None:
    torch.manual_seed(0)
    model = create_backbone("resnet32_cifar", num_classes=10, init="he_normal")
    conv = model.trunk[1][-1].body[0]  # a 64 -> 64 3x3 convolution: fan-in 576
    assert conv.weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.03)
    assert model.fc.weight.std().item() == pytest.approx((2 / 64) ** 0.5, rel=0.1)
    default = create_backbone("resnet32_cifar", num_classes=10)
    assert default.trunk[1][-1].body[0].weight.std().item() < 0.7 * (2 / 576) ** 0.5  # PyTorch's uniform init


def test_step_dropout_shares_one_mask_per_step_and_batch() -> None:
    """WRN dropout (`drop_rate`): the same batch sees the same mask until the next step; another batch its own."""
    from lnl.hypergrad import functional_forward
    from lnl.models.layers import new_dropout_masks

    torch.manual_seed(0)
    model = create_backbone("wrn28_2", num_classes=4, drop_rate=0.3).train()
    x = torch.randn(4, 3, 8, 8)
    first = model(x)
    torch.testing.assert_close(model(x), first)  # the same mask within the step ...
    params = {n: p.detach() for n, p in model.named_parameters()}
    torch.testing.assert_close(functional_forward(model, params, None, x), first)  # ... also functionally
    assert not torch.allclose(model(x.clone()), first)  # another batch draws its own mask
    new_dropout_masks(model)
    assert not torch.allclose(model(x), first)  # a new step: a new mask
    model.eval()
    torch.testing.assert_close(model(x), model(x))
