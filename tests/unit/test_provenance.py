"""Every config in configs/ has provenance: configs/provenance.yaml pins its recipe values to their sources.

A config no family covers fails (a new config needs a provenance entry), and so does any pinned value that
differs from the config's (a changed recipe value needs its source updated too).
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.paths import CONFIGS

TABLE = CONFIGS / "provenance.yaml"
PROVENANCE = yaml.safe_load(TABLE.read_text())
RUN_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p != TABLE)
_MISSING = object()


def lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def expectations(name: str) -> list[tuple[str, Any, str]]:
    """(dotted key, expected value, source) for every value the table fixes for the config file `name`."""
    out = []
    for rule in PROVENANCE["name_rules"]:
        match = re.search(rule["pattern"], name)
        if not match:
            continue
        if "kinds" in rule:
            out.append((rule["kind_key"], rule["kinds"][match["token"]], rule["source"]))
            out.append((rule["rate_key"], int(match["percent"]) / 100, rule["source"]))
        else:
            out.append((rule["kind_key"], rule["kind"], rule["source"]))
    for family in PROVENANCE["families"]:
        if any(fnmatch.fnmatch(name, glob) for glob in family["globs"]):
            source = f"family {family['family']}"
            out.extend(
                (key, pin["value"], f"{source}: {pin['source']}") for key, pin in family["pins"].items()
            )
    return out


def test_every_family_glob_matches_a_config() -> None:
    names = [p.name for p in RUN_CONFIGS]
    for family in PROVENANCE["families"]:
        for glob in family["globs"]:
            assert fnmatch.filter(names, glob), (
                f"provenance family {family['family']}: glob {glob} matches no config"
            )


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=[p.stem for p in RUN_CONFIGS])
def test_config_matches_its_provenance(path: Path) -> None:
    families = [
        f["family"] for f in PROVENANCE["families"] if any(fnmatch.fnmatch(path.name, g) for g in f["globs"])
    ]
    assert families, (
        f"configs/{path.name}: no family in configs/provenance.yaml covers it; add its sources there"
    )
    config = yaml.safe_load(path.read_text())
    errors = []
    for key, expected, source in expectations(path.name):
        found = lookup(config, key)
        if found is _MISSING or found != expected or isinstance(found, bool) != isinstance(expected, bool):
            shown = "<missing>" if found is _MISSING else repr(found)
            errors.append(
                f"configs/{path.name}: {key}: expected {expected!r}, found {shown} (source: {source})"
            )
    assert not errors, "\n".join(errors)


def test_emlc_kstep_reduction_is_pinned_to_the_official_row_mean() -> None:
    """Every EMLC config (k = 5 ones above all) must say `kstep_reduction: mean`, with its source line."""
    emlc = [p for p in RUN_CONFIGS if p.name.startswith("emlc_")]
    assert len([p for p in emlc if p.name.endswith("_k5.yaml")]) >= 11
    for path in emlc:
        pins = {key: (value, source) for key, value, source in expectations(path.name)}
        value, source = pins["model.init_args.kstep_reduction"]
        assert value == "mean" and "batch_dot_product.mean()" in source, path.name
        config = yaml.safe_load(path.read_text())
        assert lookup(config, "model.init_args.kstep_reduction") == "mean", path.name
