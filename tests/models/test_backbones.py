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
