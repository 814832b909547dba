"""Training views drawn on the training device, in batches, for in-memory uint8 images (CIFAR, Digits).

The same pipelines as ``lnl.data.transforms`` (RandomCrop with zero padding + horizontal flip; RandAugment,
Cubuk et al. 2020, arXiv:1909.13719, with UDA's Cutout; AutoAugment's CIFAR10 policy, Cubuk et al. 2019,
arXiv:1805.09501), with **per-sample** randomness: every sample draws its own crop, flip, operations, signs
and Cutout square. The draws are a counter-based hash of (stream seed, epoch, index, view, draw), made on the
host from the batch's indices: the same seed gives the same views whatever the batch boundaries, worker count
or rank. The operations and their magnitudes are torchvision's (the op table of ``T.RandAugment`` /
``T.AutoAugment``, the batched uint8 kernels of ``torchvision.transforms.v2.functional``); only the sampling is
per sample here, because both torchvision's and kornia's policy modules draw one operation for a whole batch.
Samples that drew the same (operation, signed magnitude) are processed together, so each stage costs one op
call per distinct draw on a slice of the batch, and no step reads a value back from the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torchvision.transforms.v2.functional as F2
from torch import Tensor
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from lnl.data.batch import Batch, Views
from lnl.data.transforms import DigitsRandAugment

DEVICE_FAMILIES = ("cifar", "digits")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer (Steele et al. 2014): a bijective 64-bit mix, uint64 -> uint64 (wrapping)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_uniforms(seed: int, epoch: np.ndarray, index: np.ndarray, view: int, draws: int) -> np.ndarray:
    """Uniforms in [0, 1), float64 [B, draws]: a pure function of (seed, epoch, index, view, draw number)."""
    key = _splitmix64(np.uint64(seed % 2**64) ^ _splitmix64(np.uint64(view)))
    key = _splitmix64(key ^ _splitmix64(np.asarray(epoch, dtype=np.uint64)))
    key = _splitmix64(key ^ np.asarray(index, dtype=np.int64).astype(np.uint64))
    bits = _splitmix64(key[:, None] ^ _splitmix64(np.arange(1, draws + 1, dtype=np.uint64))[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


class Action(NamedTuple):
    """One operation with its signed magnitude, as torchvision's ``_apply_op`` would receive it."""

    op: str
    magnitude: float


@dataclass(frozen=True)
class ViewSpec:
    """One training view: crop padding, flip, the op stages (RandAugment or AutoAugment) and Cutout size.

    ``table[s]`` maps stage-``s`` draws to an action: RandAugment indexes it by (op, sign), AutoAugment by
    (sub-policy, sign); ``probs[s]`` (AutoAugment only: RandAugment has none) is the probability that stage ``s`` of a sub-policy applies.
    """

    padding: int
    flip: bool
    actions: tuple[Action, ...] = ()
    table: tuple[np.ndarray, ...] = ()  # per stage: int [rows, 2] action id or -1 (no-op)
    probs: tuple[np.ndarray, ...] = ()  # autoaugment: per stage float [rows]
    cutout: int = 0


def _randaugment_spec(base: ViewSpec, ra: T.RandAugment, size: int, num_ops: int, cutout: int) -> ViewSpec:
    space = ra._augmentation_space(ra.num_magnitude_bins, (size, size))
    actions, table = [], np.full((len(space), 2), -1, dtype=np.int64)
    for i, (name, (mags, signed)) in enumerate(space.items()):
        m = float(mags[ra.magnitude].item()) if mags.ndim > 0 else 0.0
        if name == "Identity":
            continue
        for sign in (0, 1):  # torchvision: `if signed and torch.randint(2, (1,)): magnitude *= -1.0`
            value = -m if signed and sign == 1 else m
            if Action(name, value) not in actions:
                actions.append(Action(name, value))
            table[i, sign] = actions.index(Action(name, value))
    return ViewSpec(base.padding, base.flip, tuple(actions), (table,) * num_ops, (), cutout)


def _autoaugment_spec(base: ViewSpec, aa: T.AutoAugment, size: int) -> ViewSpec:
    space = aa._augmentation_space(10, (size, size))
    actions: list[Action] = []
    tables = [np.full((len(aa.policies), 2), -1, dtype=np.int64) for _ in range(2)]
    probs = [np.zeros(len(aa.policies)) for _ in range(2)]
    for pid, policy in enumerate(aa.policies):
        for s, (name, p, bin_id) in enumerate(policy):
            mags, signed = space[name]
            m = float(mags[bin_id].item()) if bin_id is not None else 0.0
            probs[s][pid] = p
            for sign in (0, 1):  # torchvision: `if signed and signs[i] == 0: magnitude *= -1.0`
                value = -m if signed and sign == 0 else m
                if Action(name, value) not in actions:
                    actions.append(Action(name, value))
                tables[s][pid, sign] = actions.index(Action(name, value))
    return ViewSpec(base.padding, base.flip, tuple(actions), tuple(tables), tuple(probs))


def device_view_specs(family: str, image_size: int) -> dict[str, ViewSpec]:
    """The "weak", "strong" and "autoaugment" views of ``family`` exactly as ``build_transforms`` defines them."""
    s = int(image_size)
    if family == "cifar":
        weak = ViewSpec(padding=max(s // 8, 1), flip=True)
        strong = _randaugment_spec(weak, T.RandAugment(num_ops=2, magnitude=9), s, 2, s // 2)
        auto = _autoaugment_spec(weak, T.AutoAugment(T.AutoAugmentPolicy.CIFAR10), s)
    elif family == "digits":
        weak = ViewSpec(padding=1, flip=False)
        strong = _randaugment_spec(weak, DigitsRandAugment(num_ops=2, magnitude=9), s, 2, 0)
        auto = weak
    else:
        raise ValueError(f"no device views for family {family!r}; allowed are {', '.join(DEVICE_FAMILIES)}")
    return {"weak": weak, "strong": strong, "autoaugment": auto}


class Stage(NamedTuple):
    """One op stage of a batch: the batch order sorted by action, and host-known slices of it per action."""

    order: Tensor  # long [B]
    groups: list[tuple[int, int, int]]  # (action id, start, end) into `order`


class ViewPlan(NamedTuple):
    """A batch's draws for one view (host tensors, moved to the device with the batch)."""

    crop: Tensor  # long [B, 3]: row offset, column offset, flip (0/1)
    stages: list[Stage]
    cutout: Tensor  # long [B, 2]: centre row, column (unused when the spec has no Cutout)


def _stage(actions: np.ndarray) -> Stage:
    order = np.argsort(actions, kind="stable")
    a = actions[order]
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    ends = np.r_[starts[1:], len(a)]
    groups = [(int(a[i]), int(i), int(e)) for i, e in zip(starts, ends) if a[i] >= 0]
    return Stage(torch.from_numpy(order), groups)


def draw_plan(
    spec: ViewSpec, seed: int, epoch: np.ndarray, index: np.ndarray, view: int, size: int
) -> ViewPlan:
    """Draw every sample's crop, flip, op stages and Cutout centre for one view (see `sample_uniforms`)."""
    n_stages = len(spec.table)
    u = sample_uniforms(seed, epoch, index, view, 6 + 3 * n_stages)
    span = 2 * spec.padding + 1
    crop = np.stack(
        [(u[:, 0] * span).astype(np.int64), (u[:, 1] * span).astype(np.int64), (u[:, 2] < 0.5) & spec.flip], 1
    ).astype(np.int64)
    cutout = np.stack([(u[:, 3] * size).astype(np.int64), (u[:, 4] * size).astype(np.int64)], 1)
    stages = []
    if spec.probs:  # AutoAugment: one sub-policy per sample, each of its two ops applied with its probability
        policy = (u[:, 5] * len(spec.table[0])).astype(np.int64)
    for s, table in enumerate(spec.table):
        sign = (u[:, 7 + 3 * s] < 0.5).astype(np.int64)
        if not spec.probs:  # RandAugment: one op per stage, uniform over the space (Identity included)
            row = (u[:, 6 + 3 * s] * len(table)).astype(np.int64)
            action = table[row, sign]
        else:
            action = np.where(u[:, 6 + 3 * s] < spec.probs[s][policy], table[policy, sign], -1)
        stages.append(_stage(action))
    return ViewPlan(torch.from_numpy(crop), stages, torch.from_numpy(cutout))


def apply_action(x: Tensor, action: Action) -> Tensor:
    """torchvision's ``_apply_op`` (v1, used by the loader path) on a uint8 batch [B, C, H, W], nearest, fill 0."""
    op, m, nearest = action.op, action.magnitude, InterpolationMode.NEAREST
    if op in ("ShearX", "ShearY"):
        shear = [math.degrees(math.atan(m)), 0.0] if op == "ShearX" else [0.0, math.degrees(math.atan(m))]
        return F2.affine(x, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=nearest,
                         fill=None, center=[0, 0])  # fmt: skip
    if op in ("TranslateX", "TranslateY"):
        move = [int(m), 0] if op == "TranslateX" else [0, int(m)]
        return F2.affine(x, angle=0.0, translate=move, scale=1.0, shear=[0.0, 0.0], interpolation=nearest,
                         fill=None)  # fmt: skip
    simple = {
        "Rotate": lambda: F2.rotate(x, m, interpolation=nearest, fill=None),
        "Brightness": lambda: F2.adjust_brightness(x, 1.0 + m),
        "Color": lambda: F2.adjust_saturation(x, 1.0 + m),
        "Contrast": lambda: F2.adjust_contrast(x, 1.0 + m),
        "Sharpness": lambda: F2.adjust_sharpness(x, 1.0 + m),
        "Posterize": lambda: F2.posterize(x, int(m)),
        "Solarize": lambda: F2.solarize(x, m),
        "AutoContrast": lambda: F2.autocontrast(x),
        "Equalize": lambda: F2.equalize(x),
        "Invert": lambda: F2.invert(x),
    }
    if op not in simple:
        raise ValueError(f"operation {op!r} is not recognized")
    return simple[op]()


def crop_flip(images: Tensor, crop: Tensor, padding: int) -> Tensor:
    """Zero-padded RandomCrop + optional horizontal flip of a uint8 batch, per sample, as one gather."""
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    ar_h, ar_w = torch.arange(h, device=images.device), torch.arange(w, device=images.device)
    rows = crop[:, 0:1] + ar_h  # [B, H]
    cols = crop[:, 1:2] + torch.where(crop[:, 2:3].bool(), w - 1 - ar_w, ar_w)  # [B, W]
    bi = torch.arange(b, device=images.device)[:, None, None, None]
    ci = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def apply_plan(images: Tensor, spec: ViewSpec, plan: ViewPlan, mean: Tensor, std: Tensor) -> Tensor:
    """The view of a uint8 batch [B, C, H, W]: crop/flip, op stages, normalize (float32), Cutout (zeros)."""
    x = crop_flip(images, plan.crop, spec.padding)
    for stage in plan.stages:
        if not stage.groups:
            continue
        xs = x.index_select(0, stage.order)
        for action_id, start, end in stage.groups:
            xs[start:end] = apply_action(xs[start:end], spec.actions[action_id])
        x = x.index_copy(0, stage.order, xs)
    x = (x.float() - 255.0 * mean.view(1, -1, 1, 1)) / (255.0 * std.view(1, -1, 1, 1))
    if spec.cutout:
        h, w = x.shape[-2:]
        y0, x0 = plan.cutout[:, 0:1] - spec.cutout // 2, plan.cutout[:, 1:2] - spec.cutout // 2
        ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        in_rows = (ar_h >= y0) & (ar_h < y0 + spec.cutout)  # [B, H]
        in_cols = (ar_w >= x0) & (ar_w < x0 + spec.cutout)  # [B, W]
        x = x.masked_fill((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0.0)
    return x


class DeviceViews:
    """A training set's uint8 images kept on the training device, and the views each training stream asks for.

    ``streams`` maps a stream ("noisy", "clean") to its seed and its view keys -> view names (e.g.
    ``{"weak": "weak", "strong": "strong"}``; the keys are `lnl.data.batch.Views` fields). `plan` runs on the
    host before the batch moves (draws from the batch's (epoch, index)); `apply` runs on the device after it and
    fills each stream's `views`, as the loader path delivers them.
    """

    def __init__(
        self,
        images: np.ndarray,
        family: str,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        streams: dict[str, tuple[int, dict[str, str]]],
    ) -> None:
        self.host = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        self.specs, self.size, self.streams = device_view_specs(family, image_size), int(image_size), streams
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)
        self._on: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    def plan(self, batch: Batch) -> Batch:
        """`batch` (a host batch of (epoch, index) items) with each stream's per-view draws (`plans`)."""
        streams = batch.streams()
        for name, (seed, views) in self.streams.items():
            stream = streams.get(name)
            if stream is None or stream.epoch is None:
                continue
            epoch, index = stream.epoch.numpy(), stream.index.numpy()
            plans = {key: draw_plan(self.specs[view], seed, epoch, index, v, self.size)
                     for v, (key, view) in enumerate(views.items())}  # fmt: skip
            streams[name] = stream._replace(plans=plans)
        return batch._replace(**streams)

    def _resident(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        if device not in self._on:  # copied once per device; the training set stays there
            self._on[device] = (self.host.to(device), self.mean.to(device), self.std.to(device))
        return self._on[device]

    def apply(self, batch: Batch) -> Batch:
        """`batch` with each planned stream's views drawn (float32, normalized), on the batch's device."""
        streams = batch.streams()
        for name, (_, views) in self.streams.items():
            stream = streams.get(name)
            if stream is None or stream.plans is None:
                continue
            images, mean, std = self._resident(stream.index.device)
            raw = images.index_select(0, stream.index)
            drawn = {key: apply_plan(raw, self.specs[view], stream.plans[key], mean, std)
                     for key, view in views.items()}  # fmt: skip
            streams[name] = stream._replace(views=Views(**drawn), epoch=None, plans=None)
        return batch._replace(**streams)
