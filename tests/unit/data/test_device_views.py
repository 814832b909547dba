"""Device views (lnl.data.device_views) on CPU tensors: the loader path's ops, per-sample draws at their
defined rates (chi-square / binomial bounds from the sample size), reproducibility, and a fit through them."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image
from scipy import stats
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms.autoaugment import _apply_op

from lnl.data.batch import Batch, Stream, Views
from lnl.data.datamodule import DataRequirements, NoisyLabelDataModule
from lnl.data.device_views import (
    DeviceViews,
    apply_action,
    apply_plan,
    crop_flip,
    device_view_specs,
    draw_plan,
)
from lnl.data.noise import NoiseSpec
from lnl.errors import ConfigError
from lnl.methods.dml import DML
from lnl.tools.fakedata import write_cifar10, write_clothing1m

ALPHA = 1e-4  # per check; a correct sampler fails one of these checks with probability < ~1e-3 in all
CIFAR_STATS = ((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))


def _images(n: int, size: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Random pixels for half the batch, smooth ramps for the rest (equalize/autocontrast see both kinds)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    ramp = (np.linspace(30, 210, size)[None, :, None] + rng.integers(0, 40, (n // 2, 1, channels))).astype(
        np.uint8
    )
    a[n // 2 :] = np.broadcast_to(ramp[:, :, None, :], (n // 2, size, size, channels))
    return a


def _chi2_ok(counts: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(statistic, critical value at ALPHA) of a chi-square goodness-of-fit test."""
    stat = float(((counts - expected) ** 2 / expected).sum())
    return stat, float(stats.chi2.ppf(1 - ALPHA, len(counts) - 1))


def _binomial_bound(n: int, p: float) -> float:
    """Half-width of the two-sided ALPHA interval of a binomial count, normal approximation."""
    return float(stats.norm.ppf(1 - ALPHA / 2)) * (n * p * (1 - p)) ** 0.5


@pytest.mark.parametrize("family,channels,size", [("cifar", 3, 32), ("digits", 1, 8)])
def test_every_operation_is_the_loader_paths_operation(family: str, channels: int, size: int) -> None:
    a = _images(8, size, channels)
    x = torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    specs = device_view_specs(family, size)
    actions = set(specs["strong"].actions) | set(specs["autoaugment"].actions)
    assert actions, "no operation to test"
    for action in actions:
        got = apply_action(x, action)
        pil = [Image.fromarray(img[..., 0] if channels == 1 else img) for img in a]
        want = [
            np.asarray(_apply_op(p, action.op, action.magnitude, InterpolationMode.NEAREST, None))
            for p in pil
        ]
        want_t = torch.from_numpy(np.stack(want).reshape(a.shape)).permute(0, 3, 1, 2)
        diff = (got.int() - want_t.int()).abs()
        assert int(diff.max()) <= 1, f"{action}: differs from torchvision on PIL by {int(diff.max())} levels"


def test_crop_and_flip_move_pixels_exactly_as_torchvision() -> None:
    a = _images(16)
    x = torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    plan = draw_plan(device_view_specs("cifar", 32)["weak"], 3, np.zeros(16), np.arange(16), 0, 32)
    out = crop_flip(x, plan.crop, 4)
    for k, (i, j, flip) in enumerate(plan.crop.tolist()):
        want = T.functional.crop(T.functional.pad(x[k], [4]), i, j, 32, 32)
        torch.testing.assert_close(out[k], want.flip(-1) if flip else want, rtol=0, atol=0)


def test_crop_offsets_are_uniform_over_the_81_offsets_and_flip_rate_is_one_half() -> None:
    n = 81 * 200
    plan = draw_plan(device_view_specs("cifar", 32)["weak"], 7, np.full(n, 3), np.arange(n), 0, 32)
    crop = plan.crop.numpy()
    assert crop[:, :2].min() == 0 and crop[:, :2].max() == 8
    counts = np.bincount(crop[:, 0] * 9 + crop[:, 1], minlength=81)
    stat, crit = _chi2_ok(counts, np.full(81, n / 81))
    assert stat < crit, f"crop offsets: chi2 {stat:.1f} >= {crit:.1f} (81 cells, {n} draws)"
    assert abs(crop[:, 2].sum() - n / 2) < _binomial_bound(n, 0.5), crop[:, 2].mean()
    digits = draw_plan(device_view_specs("digits", 8)["weak"], 7, np.zeros(900), np.arange(900), 0, 8)
    assert set(digits.crop[:, 0].tolist()) == {0, 1, 2} and digits.crop[:, 2].sum() == 0  # pad 1, no flip


def _stage_actions(plan, stage: int, n: int) -> np.ndarray:
    """Per-sample action id of one stage (-1: none), read back from the plan's sorted slices."""
    out = np.full(n, -1)
    order = plan.stages[stage].order.numpy()
    for action, start, end in plan.stages[stage].groups:
        out[order[start:end]] = action
    return out


def test_randaugment_draws_each_op_uniformly_per_sample_with_random_signs() -> None:
    n = 14 * 400
    spec = device_view_specs("cifar", 32)["strong"]
    space = T.RandAugment(num_ops=2, magnitude=9)._augmentation_space(31, (32, 32))  # the CPU path's ops
    plan = draw_plan(spec, 11, np.zeros(n), np.arange(n), 1, 32)
    for stage in range(2):
        actions = _stage_actions(plan, stage, n)
        names = np.array([spec.actions[a].op if a >= 0 else "Identity" for a in actions])
        counts = np.array([(names == op).sum() for op in space])
        stat, crit = _chi2_ok(counts, np.full(len(space), n / len(space)))
        assert stat < crit, f"stage {stage}: op frequencies chi2 {stat:.1f} >= {crit:.1f}: {counts}"
        signed = [op for op, (mags, s) in space.items() if s]
        for op in signed:  # each sign of a signed op half of the time
            mine = actions[names == op]
            negative = sum(spec.actions[a].magnitude < 0 for a in mine)
            assert abs(negative - len(mine) / 2) < _binomial_bound(len(mine), 0.5), (op, negative, len(mine))
    assert len(spec.table) == 2 and spec.cutout == 16
    # ops are independent across samples: a batch of 128 holds many different ops at once
    assert len(draw_plan(spec, 11, np.zeros(128), np.arange(128), 1, 32).stages[0].groups) > 10


def test_autoaugment_cifar10_policy_frequencies() -> None:
    n = 25 * 400
    spec = device_view_specs("cifar", 32)["autoaugment"]
    policies = T.AutoAugment(T.AutoAugmentPolicy.CIFAR10).policies  # the CPU path's policy table
    plan = draw_plan(spec, 5, np.ones(n), np.arange(n), 2, 32)
    for stage in range(2):
        names = np.array([spec.actions[a].op if a >= 0 else "none" for a in _stage_actions(plan, stage, n)])
        ops = sorted({p[stage][0] for p in policies})
        expected = np.array([sum(n / 25 * p[stage][1] for p in policies if p[stage][0] == op) for op in ops])
        counts = np.array([(names == op).sum() for op in ops])
        cells = np.r_[counts, (names == "none").sum()], np.r_[expected, n - expected.sum()]
        zero = cells[1] == 0  # ops of probability 0 (("Invert", 0.0)) must never run
        assert (cells[0][zero] == 0).all()
        stat, crit = _chi2_ok(cells[0][~zero], cells[1][~zero])
        assert stat < crit, f"stage {stage}: chi2 {stat:.1f} >= {crit:.1f}: {dict(zip(ops, counts))}"


def test_grouped_batch_equals_each_sample_augmented_alone() -> None:
    a = _images(24)
    x = torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    mean, std = (torch.tensor(v) for v in CIFAR_STATS)
    for view in ("strong", "autoaugment"):
        spec = device_view_specs("cifar", 32)[view]
        plan = draw_plan(spec, 1, np.zeros(24), np.arange(24), 0, 32)
        batch = apply_plan(x, spec, plan, mean, std)
        for k in range(24):
            one = draw_plan(spec, 1, np.zeros(1), np.array([k]), 0, 32)
            torch.testing.assert_close(batch[k : k + 1], apply_plan(x[k : k + 1], spec, one, mean, std))


def _views(seed: int, index: np.ndarray, chunks: int) -> torch.Tensor:
    a = _images(32)
    streams = {"noisy": (seed, {"weak": "weak", "strong": "strong"})}
    dv = DeviceViews(a, "cifar", 32, *CIFAR_STATS, streams)
    out = []
    for part in np.array_split(index, chunks):
        noisy = Stream(Views(), torch.zeros(1), torch.as_tensor(part), epoch=torch.full((len(part),), 2))
        batch = dv.apply(dv.plan(Batch(noisy)))
        assert (
            batch.noisy.epoch is None and batch.noisy.plans is None
        )  # the loader path's contract: no draws left over
        out.append(torch.cat([batch.noisy.views.weak, batch.noisy.views.strong], 1))
    return torch.cat(out)


def test_same_seed_same_views_whatever_the_batch_boundaries() -> None:
    index = np.random.default_rng(0).permutation(32)
    whole = _views(0, index, 1)
    torch.testing.assert_close(_views(0, index, 5), whole, rtol=0, atol=0)
    assert not torch.equal(_views(1, index, 1), whole)
    assert not torch.equal(whole[:, :3], whole[:, 3:])  # the weak and strong views draw apart


def test_file_backed_images_stay_on_the_loader_path(tmp_path: Path) -> None:
    write_clothing1m(tmp_path, n_noisy=28, n_clean=14, n_val=14, n_test=14)
    kwargs = {"root": str(tmp_path), "source_kwargs": {"strict_sizes": False, "image_size": 32}}
    with pytest.raises(ConfigError, match="augment_on = 'device' for dataset 'clothing1m'"):
        NoisyLabelDataModule("clothing1m", augment_on="device", **kwargs)
    dm = NoisyLabelDataModule("clothing1m", **kwargs)  # auto
    assert not dm.device_capable and dm.num_workers == max(0, min(8, (os.cpu_count() or 1) - 1))
    assert NoisyLabelDataModule("digits").num_workers == 0


def test_auto_draws_on_the_device_for_in_memory_images_trained_on_cuda() -> None:
    for mode, device, want in (("auto", "cuda", True), ("auto", "cpu", False), ("loader", "cuda", False),
                               ("device", "cpu", True)):  # fmt: skip
        dm = NoisyLabelDataModule("digits", augment_on=mode)
        dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        assert dm.augments_on_device() is want, (mode, device)


def test_a_dml_fit_through_device_views_on_generated_cifar_pickles(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n_train_per_class=12, n_test_per_class=2)
    dm = NoisyLabelDataModule("cifar10", root=str(tmp_path), noise=NoiseSpec("symmetric", 0.4), val_per_class=2,
                              batch_size=16, augment_on="device")  # fmt: skip
    seen: list[torch.Tensor] = []

    class Spy(DML):
        def training_step(self, batch, batch_idx):
            seen.append(batch.noisy.views.strong.detach().clone())
            return super().training_step(batch, batch_idx)

    model = Spy(num_classes=10, backbone="tiny_cnn")
    trainer = Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, accelerator="cpu", logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert dm.device_views is not None and len(seen) == 3 and seen[0].shape == (16, 3, 32, 32)
    assert trainer.global_step > 0 and all(torch.isfinite(p).all() for p in model.parameters())
    assert DataRequirements.of(model).train_views == ("weak", "strong")


def test_views_bench_times_every_view() -> None:
    from lnl.tools.bench_views import run_views_bench

    rows = run_views_bench("cpu", batch=8, steps=1)
    assert [r.view for r in rows] == ["weak", "strong", "autoaugment"]
    assert all(0 < r.host_ms <= r.wall_ms for r in rows)
