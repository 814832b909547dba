"""Transforms: PIL -> normalized float tensors, right shapes, reproducible under torch's seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from lnl.data.sources import create_source
from lnl.data.transforms import Cutout, DigitsRandAugment, ToNormalizedTensor, build_transforms
from lnl.errors import ConfigError

VIEWS = ("weak", "strong", "clean_autoaugment", "eval")
CIFAR = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
# family, input (width, height, mode), image_size, normalization stats, expected output shape
CASES = {
    "cifar": ((32, 32, "RGB"), 32, CIFAR, (3, 32, 32)),
    "clothing": (
        (40, 30, "RGB"),
        24,
        {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
        (3, 24, 24),
    ),
    "generic": ((20, 20, "RGB"), 16, {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}, (3, 16, 16)),
    "digits": ((8, 8, "L"), 8, {"mean": (0.3053,), "std": (0.3759,)}, (1, 8, 8)),
}


def _image(w: int, h: int, mode: str, seed: int = 0) -> Image.Image:
    a = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3 if mode == "RGB" else 1), dtype=np.uint8)
    return Image.fromarray(a[..., 0] if mode == "L" else a)


def _build(family: str):
    (w, h, mode), size, stats, shape = CASES[family]
    return build_transforms(family, image_size=size, **stats), _image(w, h, mode), shape


@pytest.mark.parametrize("family", list(CASES))
def test_shapes_dtypes_and_seeded_reproducibility(family):
    tr, img, shape = _build(family)
    for view in VIEWS:
        outs = []
        for _ in range(2):
            torch.manual_seed(1234)
            outs.append(getattr(tr, view)(img))
        assert outs[0].shape == shape and outs[0].dtype == torch.float32 and torch.isfinite(outs[0]).all(), (
            view
        )
        assert torch.equal(outs[0], outs[1]), f"{family}/{view} not reproducible under torch.manual_seed"
    torch.manual_seed(0)
    weak = [tr.weak(img) for _ in range(6)]
    assert any(not torch.equal(weak[0], w) for w in weak[1:]), "weak augmentation never varies"


@pytest.mark.parametrize("family", list(CASES))
def test_eval_is_deterministic(family):
    tr, img, _ = _build(family)
    torch.manual_seed(0)
    a = tr.eval(img)
    torch.manual_seed(99)
    assert torch.equal(a, tr.eval(img)) and torch.equal(tr.get("eval")(img), a)


def test_strong_differs_from_weak_for_a_fixed_seed_on_cifar():
    tr, _, _ = _build("cifar")
    for seed in range(5):
        img = _image(32, 32, "RGB", seed)
        torch.manual_seed(seed)
        weak = tr.weak(img)
        torch.manual_seed(seed)
        strong = tr.strong(img)
        torch.manual_seed(seed)
        auto = tr.clean_autoaugment(img)
        assert not torch.equal(weak, strong) and weak.shape == strong.shape == auto.shape


def test_normalization_values_and_fast_path_match_torchvision():
    tr, _, _ = _build("cifar")
    img = Image.new("RGB", (32, 32), (10, 128, 250))
    expected = (torch.tensor([10, 128, 250]) / 255.0 - torch.tensor(CIFAR["mean"])) / torch.tensor(
        CIFAR["std"]
    )
    assert torch.allclose(tr.eval(img), expected[:, None, None].expand(3, 32, 32), atol=1e-6)
    ref = T.Compose([T.ToTensor(), T.Normalize(**CIFAR)])
    rgb = _image(32, 32, "RGB", 3)
    assert torch.allclose(ToNormalizedTensor(**CIFAR)(rgb), ref(rgb), atol=1e-6)
    with pytest.raises(ConfigError, match="1 channels; the normalization expects 3"):
        tr.eval(_image(32, 32, "L"))


def test_digits_weak_is_a_shift_never_a_flip():
    tr, img, _ = _build("digits")
    padded = np.pad(np.asarray(img), 1)  # RandomCrop(8, padding=1) pads with 0
    shifts = [
        tr.eval(Image.fromarray(padded[dy : dy + 8, dx : dx + 8])) for dy in range(3) for dx in range(3)
    ]
    for seed in range(20):
        torch.manual_seed(seed)
        out = tr.weak(img)
        assert any(torch.allclose(out, s) for s in shifts)
    torch.manual_seed(5)
    weak = tr.weak(img)
    torch.manual_seed(5)
    assert torch.equal(tr.get("autoaugment")(img), weak)  # digits: no AutoAugment policy, clean view = weak


def test_digits_strong_is_mild_but_different():
    src = create_source("digits")
    tr, digits = build_transforms("digits", mean=src.mean, std=src.std, image_size=8), src.train()
    differ = 0
    for i in range(40):
        torch.manual_seed(i)
        weak = tr.weak(digits.image(i))
        torch.manual_seed(i)
        differ += not torch.equal(weak, tr.strong(digits.image(i)))
    assert differ >= 30
    assert {"Solarize", "Color"}.isdisjoint(DigitsRandAugment()._augmentation_space(31, (8, 8)))


def test_cutout_zeroes_one_clipped_square():
    torch.manual_seed(0)
    for _ in range(20):
        out = Cutout(16)(torch.ones(3, 32, 32))
        zero = out[0] == 0
        rows, cols = zero.any(1).sum().item(), zero.any(0).sum().item()
        assert 8 <= rows <= 16 and 8 <= cols <= 16 and zero.sum() == rows * cols
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_bad_family_and_view_are_config_errors():
    with pytest.raises(
        ConfigError, match="family = 'imagenet': unknown; allowed are cifar, clothing, digits, generic"
    ):
        build_transforms("imagenet", mean=(0.5,), std=(0.5,), image_size=32)
    with pytest.raises(ConfigError, match="one value per channel"):
        build_transforms("cifar", mean=(0.5, 0.5, 0.5), std=(0.5,), image_size=32)
    tr, _, _ = _build("cifar")
    with pytest.raises(ConfigError, match="view = 'medium': unknown"):
        tr.get("medium")


def test_reflect_crop_padding_never_shows_zero_borders():
    """MW-Net's crop (`crop_padding: reflect`): a shifted crop repeats image pixels; `constant` pads with zeros."""
    img = Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8))  # no pixel is 0 anywhere
    stats = CIFAR
    zero = (0.0 - np.array(stats["mean"])) / np.array(stats["std"])  # a 0 pixel after normalization
    seen = {"constant": 0, "reflect": 0}
    for mode in seen:
        weak = build_transforms("cifar", image_size=32, padding_mode=mode, **stats).weak
        torch.manual_seed(0)
        for _ in range(20):
            out = weak(img)
            seen[mode] += int(torch.isclose(out[0], torch.tensor(zero[0], dtype=out.dtype)).any())
    assert seen["constant"] > 10 and seen["reflect"] == 0


def test_bad_crop_padding_is_a_config_error():
    from lnl.data import NoisyLabelDataModule

    with pytest.raises(ConfigError, match="crop_padding = 'wrap'"):
        NoisyLabelDataModule(dataset="digits", crop_padding="wrap")
