"""Optional `init_checkpoint` of a method's backbones from an SSL / pretrained checkpoint.

EMLC (Keren Taraday & Baskin, ICCV 2023, arXiv:2305.12961) starts its CIFAR runs from SimCLR-pretrained
backbones (§4.1, Table 4).

Formats read (always with `torch.load(weights_only=True)`; only `argparse.Namespace` is added to its allow-list):

- lnl's own Lightning checkpoints (`{"state_dict": {"student.…": …}, …}`, e.g. of `lnl.methods.SimCLR`);
- a plain state dict, e.g. timm / torchvision ImageNet ResNet-50 weights (`conv1.weight`,
  `layer1.0.conv1.weight`, `layer1.0.downsample.0.weight`, `fc.weight`);
- SupContrast checkpoints (github.com/HobbitLong/SupContrast, `util.save_model`):
  `{"model": state_dict, "opt": argparse.Namespace, "optimizer": …, "epoch": N}` of a `SupConResNet`, whose keys
  are `encoder.[module.]conv1.weight`, `encoder.[module.]layer1.0.bn1.running_mean`,
  `encoder.[module.]layer2.0.shortcut.0.weight`, … and `head.0.weight` (the projection head, never loaded).

ResNet key layouts (SupContrast's `networks/resnet_big.py` and torchvision's / timm's) are also tried under two
renamings, keeping whichever matches the most tensors of the target:

- onto lnl's CIFAR ResNets (`resnet34_cifar`, ...: a stem `trunk.0` and one flat `trunk.1` of blocks):
  `conv1` → `trunk.0.0`, `bn1` → `trunk.0.1`; block j of `layer<L>` → `trunk.1.<n>` where n counts the blocks of
  the earlier layers plus j; in a block `conv1/bn1/conv2/bn2/conv3/bn3` → `body.0/1/3/4/6/7` (BasicBlock's
  body is conv, bn, relu, conv, bn; Bottleneck's adds relu, conv, bn) and `downsample.0/1` or `shortcut.0/1`
  → `shortcut.0/1`;
- onto timm / torchvision ResNets: SupContrast's `shortcut.0/1` → `downsample.0/1`.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lnl.errors import ConfigError


def _splits(key: str) -> list[tuple[str, str]]:
    """(prefix, rest) for every way of dropping leading components of `key` (rest keeps >= 1 component)."""
    parts = key.split(".")
    return [(".".join(parts[:i]) + "." if i else "", ".".join(parts[i:])) for i in range(len(parts))]


def _best_mapping(source: list[str], own: list[str]) -> tuple[dict[str, str], int]:
    """Source key -> own key under the (source prefix, own prefix) pair that maps the most keys, and the number
    of pairs that tie with it (more than one means the checkpoint holds several matching networks)."""
    own_by_rest: dict[str, list[tuple[str, str]]] = {}
    for key in own:
        for prefix, rest in _splits(key):
            own_by_rest.setdefault(rest, []).append((prefix, key))
    votes: dict[tuple[str, str], dict[str, str]] = {}
    for key in source:
        for prefix, rest in _splits(key):
            for own_prefix, own_key in own_by_rest.get(rest, []):
                votes.setdefault((prefix, own_prefix), {})[key] = own_key
    if not votes:
        return {}, 0
    best = max(len(m) for m in votes.values())
    winners = [m for m in votes.values() if len(m) == best]
    return winners[0], len({tuple(sorted(m.items())) for m in winners})


def _classifier_prefix(module: nn.Module) -> str | None:
    """The state-dict prefix of a timm-API module's classifier (None when it has no `get_classifier`)."""
    head = module.get_classifier() if hasattr(module, "get_classifier") else None
    for name, sub in module.named_modules():
        if head is not None and sub is head and name:
            return name + "."
    return None


_BLOCK_KEY = re.compile(
    r"^(?P<pre>(?:.*\.)?)layer(?P<layer>\d+)\.(?P<block>\d+)\.(?P<part>[^.]+)\.(?P<rest>.+)$"
)
_STEM_KEY = re.compile(r"^(?P<pre>(?:.*\.)?)(?P<stem>conv1|bn1)\.(?P<rest>[^.]+)$")
_BLOCK_PARTS = {"conv1": "body.0", "bn1": "body.1", "conv2": "body.3", "bn2": "body.4", "conv3": "body.6",
                "bn3": "body.7", "shortcut": "shortcut", "downsample": "shortcut"}  # fmt: skip
_STEM_PARTS = {"conv1": "trunk.0.0", "bn1": "trunk.0.1"}


def _resnet_layout(state: dict[str, Tensor]) -> dict[tuple[str, int], int]:
    """Number of blocks per (prefix, layer index) of each torchvision / SupContrast-style ResNet in `state`: a
    prefix with `<prefix>conv1.weight` next to `<prefix>layer<L>.<j>.…` keys (empty when there is none)."""
    blocks: dict[tuple[str, int], int] = {}
    stems: set[str] = set()
    for key in state:
        if m := _BLOCK_KEY.match(key):
            where = (m["pre"], int(m["layer"]))
            blocks[where] = max(blocks.get(where, 0), int(m["block"]) + 1)
        elif (m := _STEM_KEY.match(key)) and m["stem"] == "conv1":
            stems.add(m["pre"])
    return {where: n for where, n in blocks.items() if where[0] in stems}


def _to_lnl_cifar_resnet(state: dict[str, Tensor]) -> dict[str, str] | None:
    """New key -> key of `state`: its ResNet keys renamed to lnl's `_resnet` layout (module docstring)."""
    layout = _resnet_layout(state)
    if not layout:
        return None
    prefixes = {pre for pre, _ in layout}
    out: dict[str, str] = {}
    for key in state:
        block, stem = _BLOCK_KEY.match(key), _STEM_KEY.match(key)
        if block and block["pre"] in prefixes and block["part"] in _BLOCK_PARTS:
            pre, layer = block["pre"], int(block["layer"])
            n = sum(layout.get((pre, earlier), 0) for earlier in range(1, layer)) + int(block["block"])
            out[f"{pre}trunk.1.{n}.{_BLOCK_PARTS[block['part']]}.{block['rest']}"] = key
        elif not block and stem and stem["pre"] in prefixes:
            out[f"{stem['pre']}{_STEM_PARTS[stem['stem']]}.{stem['rest']}"] = key
        else:
            out[key] = key
    return out


def _to_torchvision_resnet(state: dict[str, Tensor]) -> dict[str, str] | None:
    """New key -> key of `state`: SupContrast's `layer<L>.<j>.shortcut.*` renamed to timm's `downsample.*`."""
    if not any(".shortcut." in key for key in state) or not _resnet_layout(state):
        return None
    return {re.sub(r"(layer\d+\.\d+\.)shortcut\.", r"\1downsample.", k): k for k in state}


_RENAMINGS: tuple[Callable[[dict[str, Tensor]], dict[str, str] | None], ...] = (
    _to_lnl_cifar_resnet,
    _to_torchvision_resnet,
)


def _read(path: str) -> dict[str, Tensor]:
    """The state dict in `path` (or its `state_dict` / `model` / `backbone` entry), tensors only."""
    if not Path(path).is_file():
        raise ConfigError(f"model.init_checkpoint = {path!r}: no such file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # SupContrast's `opt`
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"model.init_checkpoint = {path!r}: not loadable with weights_only=True (it holds objects other than "
            f"tensors and plain containers; save its state dict instead): {first}"
        ) from None
    for key in ("state_dict", "model", "backbone"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(
            f"model.init_checkpoint = {path!r}: holds a {type(state).__name__}, not a state dict"
        )
    return {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, Tensor)}


def load_matching_state(path: str, targets: dict[str, nn.Module]) -> dict[str, int]:
    """Strict optional initialization (SSL / pretrained backbone weights) of each target network.

    Reads a state dict (or its `state_dict` / `model` / `backbone` entry: a Lightning checkpoint of
    `lnl.methods.SimCLR`, a SupContrast checkpoint, timm / torchvision weights; see the module docstring), matches
    keys after dropping wrapper prefixes (`module.`, `encoder.`, `student.`, ...) on either side, as they are or
    under the ResNet renamings, requires equal shapes, fails with one `ConfigError` line when nothing matches a
    target, a matched tensor's shape differs or two networks match equally, logs and returns the number of loaded
    tensors per target. The target's classifier is never loaded (an SSL head is not a classifier), and unmatched
    keys (a projection head) are ignored.
    """
    state = _read(path)
    keyings = [{k: k for k in state}] + [r for rename in _RENAMINGS if (r := rename(state)) is not None]
    counts: dict[str, int] = {}
    for name, module in targets.items():
        head = _classifier_prefix(module)
        own = {k: v for k, v in module.state_dict().items() if head is None or not k.startswith(head)}
        mapping: dict[str, str] = {}
        ties = 0
        for keys in keyings:  # the first of the best (the keys as they are win a tie)
            m, t = _best_mapping(list(keys), list(own))
            if len(m) > len(mapping):
                mapping, ties = {keys[new]: hit for new, hit in m.items()}, t
        if ties > 1:
            raise ConfigError(
                f"model.init_checkpoint = {path!r}: several networks in it match the {name} network equally "
                "well; save one network's state dict"
            )
        matched: dict[str, Tensor] = {}
        for key, hit in mapping.items():
            if own[hit].shape != state[key].shape:
                raise ConfigError(
                    f"model.init_checkpoint = {path!r}: {key} has shape {tuple(state[key].shape)}, "
                    f"{name}.{hit} needs {tuple(own[hit].shape)}"
                )
            matched[hit] = state[key]
        if not matched:
            raise ConfigError(f"model.init_checkpoint = {path!r}: no key matches the {name} network")
        module.load_state_dict(matched, strict=False)
        counts[name] = len(matched)
        rank_zero_info(
            f"init_checkpoint: loaded {len(matched)}/{len(own)} {name} backbone tensors from {path}"
        )
    return counts
