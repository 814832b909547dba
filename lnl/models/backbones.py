"""CIFAR-style backbones registered in timm's registry, and `create_backbone` over `timm.create_model`.

Every network here follows timm's classifier API (`forward_features`, `forward_head(x, pre_logits=True)`,
`get_classifier`, `num_features`), so teachers and meta-nets read penultimate features the same way from our
CIFAR nets and from any timm model (e.g. an ImageNet ResNet-50 with `pretrained: true` for Clothing1M).
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from timm.models import register_model
from torch import Tensor, nn

from lnl.errors import ConfigError
from lnl.models.layers import StepDropout, ZeroPadShortcut, dropout_batch, he_normal_
from lnl.validation import fail, one_of

_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


class ClassifierNet(nn.Module):
    """A trunk returning a feature map, global average pooling and a linear classifier (timm's API)."""

    def __init__(self, trunk: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.num_features = num_features
        self.num_classes = num_classes
        self.fc = nn.Linear(num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        with dropout_batch(x):  # StepDropout layers key their masks by this batch
            return self.trunk(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean(dim=(2, 3)) if x.dim() == 4 else x.flatten(1)
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """Post-activation residual block (He et al. 2016); when shapes change, a 1x1 projection shortcut (option B)
    or a zero-padding one (`shortcut="A"`, the official CIFAR ResNet-32 of MW-Net's `resnet.py`)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(cin, planes, stride), nn.ReLU(inplace=True), *_conv_bn(planes, cout)
        )
        self.shortcut = nn.Identity()
        if (stride != 1 or cin != cout) and shortcut == "A":
            self.shortcut = ZeroPadShortcut(cin, cout, stride)
        elif stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class Bottleneck(BasicBlock):
    """Bottleneck block (1x1, 3x3, 1x1) with 4x expansion."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__(cin, planes, stride)
        cout = planes * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            *_conv_bn(planes, planes, stride),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016b); also the wide block of WRN (Zagoruyko & Komodakis)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = StepDropout(drop_rate) if drop_rate > 0 else nn.Identity()  # one mask per step and batch
        self.shortcut = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.drop(torch.relu(self.bn2(self.conv1(out)))))
        return out + skip


def _stages(
    block: type, cin: int, widths: list[int], depths: list[int], strides: list[int], **block_kwargs: Any
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width, depth, stride in zip(widths, depths, strides):
        for i in range(depth):
            layers.append(block(cin, width, stride if i == 0 else 1, **block_kwargs))
            cin = width * getattr(block, "expansion", 1)
    return nn.Sequential(*layers)


def _resnet(
    block: type, depths: list[int], widths: list[int], num_classes: int, in_chans: int, **block_kwargs: Any
) -> ClassifierNet:
    stem = nn.Sequential(*_conv_bn(in_chans, widths[0]), nn.ReLU(inplace=True))
    strides = [1] + [2] * (len(widths) - 1)
    trunk = nn.Sequential(stem, _stages(block, widths[0], widths, depths, strides, **block_kwargs))
    return ClassifierNet(trunk, widths[-1] * block.expansion, num_classes)


def _wide_resnet(
    depth: int, widen: int, num_classes: int, in_chans: int, drop_rate: float = 0.0
) -> ClassifierNet:
    n = (depth - 4) // 6
    widths = [16 * widen, 32 * widen, 64 * widen]
    layers: list[nn.Module] = [nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)]
    cin = 16
    for width, stride in zip(widths, [1, 2, 2]):
        for i in range(n):
            layers.append(PreActBlock(cin, width, stride if i == 0 else 1, drop_rate))
            cin = width
    layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)]
    return ClassifierNet(nn.Sequential(*layers), cin, num_classes)


def _clean(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in _TIMM_ONLY_KWARGS}


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ConfigError(f"pretrained = True for backbone {name!r}: no pretrained weights exist for it")


@register_model
def resnet32_cifar(
    pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any
) -> nn.Module:
    """ResNet-32 for 32x32 inputs (He et al. 2016, Sec. 4.2): 3 stages x 5 basic blocks, 16/32/64 channels.

    `shortcut`: "B" (default, 1x1 projections) or "A" (zero padding, the paper's CIFAR choice and the official
    MW-Net `resnet.py`); `init`: "default" (PyTorch's) or "he_normal" (MW-Net's `_weights_init`).
    """
    _no_pretrained("resnet32_cifar", pretrained)
    kw = _clean(kwargs)
    shortcut, init = kw.pop("shortcut", "B"), kw.pop("init", "default")
    one_of("resnet32_cifar option shortcut", shortcut, ("A", "B"))
    one_of("resnet32_cifar option init", init, ("default", "he_normal"))
    if kw:
        fail(
            "resnet32_cifar options", sorted(kw), "not options of resnet32_cifar (it takes shortcut and init)"
        )
    model = _resnet(BasicBlock, [5, 5, 5], [16, 32, 64], num_classes, in_chans, shortcut=shortcut)
    return he_normal_(model) if init == "he_normal" else model


@register_model
def resnet34_cifar(
    pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any
) -> nn.Module:
    """ResNet-34 with a 3x3 stem and no max-pool (CIFAR variant)."""
    _no_pretrained("resnet34_cifar", pretrained)
    return _resnet(BasicBlock, [3, 4, 6, 3], [64, 128, 256, 512], num_classes, in_chans)


@register_model
def resnet50_cifar(
    pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any
) -> nn.Module:
    """ResNet-50 (bottleneck) with a 3x3 stem and no max-pool (CIFAR variant)."""
    _no_pretrained("resnet50_cifar", pretrained)
    return _resnet(Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], num_classes, in_chans)


@register_model
def preact_resnet18_cifar(
    pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any
) -> nn.Module:
    """PreAct-ResNet-18 (He et al. 2016b) for 32x32 inputs, as used by DivideMix and ELR."""
    _no_pretrained("preact_resnet18_cifar", pretrained)
    widths = [64, 128, 256, 512]
    trunk = nn.Sequential(
        nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False),
        _stages(PreActBlock, 64, widths, [2, 2, 2, 2], [1, 2, 2, 2]),
        nn.BatchNorm2d(512),
        nn.ReLU(inplace=True),
    )
    return ClassifierNet(trunk, 512, num_classes)


@register_model
def wrn28_2(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """Wide-ResNet-28-2 (Zagoruyko & Komodakis 2016), 1.5M parameters."""
    _no_pretrained("wrn28_2", pretrained)
    return _wide_resnet(28, 2, num_classes, in_chans, _clean(kwargs).get("drop_rate", 0.0))


@register_model
def wrn28_10(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """Wide-ResNet-28-10 (Zagoruyko & Komodakis 2016), 36.5M parameters: DML's CIFAR backbone."""
    _no_pretrained("wrn28_10", pretrained)
    return _wide_resnet(28, 10, num_classes, in_chans, _clean(kwargs).get("drop_rate", 0.0))


@register_model
def digits_cnn(
    pretrained: bool = False, num_classes: int = 10, in_chans: int = 1, **kwargs: Any
) -> nn.Module:
    """Small CNN for 8x8 Digits: two 3x3 conv-BN-ReLU blocks (32, 64), a 2x2 max-pool, 64-d features."""
    _no_pretrained("digits_cnn", pretrained)
    trunk = nn.Sequential(
        *_conv_bn(in_chans, 32),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        *_conv_bn(32, 64),
        nn.ReLU(inplace=True),
    )
    return ClassifierNet(trunk, 64, num_classes)


@register_model
def tiny_cnn(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """Tiny conv-BN-ReLU net (8 channels) for fast tests; has BatchNorm buffers."""
    _no_pretrained("tiny_cnn", pretrained)
    return ClassifierNet(nn.Sequential(*_conv_bn(in_chans, 8), nn.ReLU()), 8, num_classes)


@register_model
def tiny_mlp(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """BN-free MLP on a 4x4 average-pooled input (any image size); for exact DDP-equivalence tests."""
    _no_pretrained("tiny_mlp", pretrained)
    hidden = int(_clean(kwargs).get("hidden", 32))
    trunk = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(in_chans * 16, hidden), nn.Tanh())
    return ClassifierNet(trunk, hidden, num_classes)


def _our_backbones() -> list[str]:
    """Sorted names of the backbones this module registers in timm's registry (read from the registry)."""
    here = timm.list_models(module=__name__.rpartition(".")[2])
    return [n for n in here if timm.models.model_entrypoint(n).__module__ == __name__]


def create_backbone(
    name: str, num_classes: int, *, in_chans: int = 3, pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """Build any registered backbone (ours or timm's) by name with `num_classes` outputs."""
    if not timm.is_model(name):
        ours = ", ".join(_our_backbones())
        raise ConfigError(f"backbone = {name!r} is not a timm model name; this project's backbones: {ours}")
    return timm.create_model(
        name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs
    )


def features_and_logits(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Penultimate features [B, D] and logits [B, C] from one forward of a timm-API classifier."""
    features = model.forward_head(model.forward_features(x), pre_logits=True)
    return features, model.get_classifier()(features)
