"""Optional `init_checkpoint` of a method's backbones from an SSL / pretrained checkpoint.

EMLC (Keren Taraday & Baskin, ICCV 2023, arXiv:2305.12961) starts its CIFAR runs from SimCLR-pretrained
backbones (§4.1, Table 4).
"""

from __future__ import annotations

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


def load_matching_state(path: str, targets: dict[str, nn.Module]) -> dict[str, int]:
    """Strict optional initialization (SSL / pretrained backbone weights) of each target network.

    Reads a state dict (or its `state_dict` / `model` / `backbone` entry, e.g. a Lightning checkpoint of
    `lnl.methods.SimCLR`), matches keys after dropping wrapper prefixes (`module.`, `encoder.`, `student.`, ...) on
    either side, requires equal shapes, fails when nothing matches a target or two keys claim the same tensor, logs
    and returns the number of loaded tensors per target. The target's classifier is never loaded (an SSL head is
    not a classifier), and unmatched keys (a projection head) are ignored.
    """
    if not Path(path).is_file():
        raise ConfigError(f"model.init_checkpoint = {path!r}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "backbone"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    counts: dict[str, int] = {}
    for name, module in targets.items():
        head = _classifier_prefix(module)
        own = {k: v for k, v in module.state_dict().items() if head is None or not k.startswith(head)}
        mapping, ties = _best_mapping(list(state), list(own))
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
