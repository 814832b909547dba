"""Every YAML in configs/ runs: a smoke `lnl fit` on generated data in the real on-disk formats.

Only sizes are shrunk (tiny backbone, 2 steps, per-class counts capped, long-tail ratio capped at 10 so that a
class of the 200-per-class fake CIFAR-10 is not empty); the method, its options, the noise protocol and the
precision are the config's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from helpers.paths import CONFIGS
from lnl.run.main import main
from lnl.tools.fakedata import (
    write_cifar10,
    write_cifar100,
    write_cifar_n,
    write_clothing1m,
    write_folder_csv,
)

RUN_CONFIGS = sorted(
    p for p in CONFIGS.glob("*.yaml") if p.name != "provenance.yaml"
)  # a data table, not a run
FRAGMENTS = sorted(CONFIGS.glob("*/*.yaml"))


@pytest.fixture(scope="session")
def fake_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fakedata")
    write_cifar10(root / "cifar10", n_train_per_class=200, n_test_per_class=4)
    write_cifar100(root / "cifar100", n_train_per_class=20, n_test_per_class=1)
    write_clothing1m(root / "clothing1m", n_noisy=140, n_clean=28, n_val=28, n_test=14, image_size=32)
    for kind in ("cifar10", "cifar100"):
        write_cifar_n(root / f"{kind}n.pt", _cifar_train_labels(root / kind, kind), noise_rate=0.4, kind=kind)
    write_folder_csv(root / "folder", n=40, num_classes=3, image_size=16, n_clean=0, n_val=0, n_test=0)
    return {"cifar10": root / "cifar10", "cifar100": root / "cifar100", "clothing1m": root / "clothing1m",
            "folder_csv": root / "folder",
            "cifar10_file": root / "cifar10n.pt", "cifar100_file": root / "cifar100n.pt"}  # fmt: skip


def _cifar_train_labels(root: Path, kind: str) -> np.ndarray:
    from lnl.data.sources import create_source

    return create_source(kind, root).train().labels


def _shrink_model(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in list(node.items()):
            if key.endswith("backbone") and isinstance(value, str):
                node[key] = "tiny_cnn"
            elif key.endswith("backbone_kwargs"):
                node[key] = {}
            elif key == "init_checkpoint":
                node[key] = None
            else:
                _shrink_model(value)
    elif isinstance(node, list):
        for value in node:
            _shrink_model(value)


def shrink(config: dict[str, Any], roots: dict[str, Path]) -> dict[str, Any]:
    """The same run at smoke size on the generated data."""
    trainer = config.setdefault("trainer", {})
    trainer.update(max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1,
                   accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.pop("strategy", None)
    _shrink_model(config["model"])
    data = config["data"]["init_args"]
    dataset = data.get("dataset", "digits")
    if dataset in roots:
        data["root"], data["download"] = str(roots[dataset]), False
    if dataset == "clothing1m":
        data.setdefault("source_kwargs", {})["strict_sizes"] = False
        if data.get("samples_per_epoch"):
            data["samples_per_epoch"] = 28
    noise = data.get("noise") or {}
    if noise.get("kind") == "file":
        noise["file"] = str(roots[f"{dataset}_file"])
    for key in ("clean_per_class", "val_per_class"):
        if data.get(key):
            data[key] = 1
    if data.get("longtail_ratio"):
        data["longtail_ratio"] = min(float(data["longtail_ratio"]), 10.0)
    if data.get("folder"):
        data["folder"]["image_size"] = 16
    data.update(batch_size=8, eval_batch_size=32, num_workers=0)
    if data.get("clean_batch_size"):
        data["clean_batch_size"] = 8
    return config


@pytest.mark.slow
@pytest.mark.parametrize("path", RUN_CONFIGS, ids=[p.stem for p in RUN_CONFIGS])
def test_config_smoke_fit(path: Path, fake_roots: dict[str, Path], in_tmp: Path) -> None:
    config = shrink(yaml.safe_load(path.read_text()), fake_roots)
    small = in_tmp / path.name
    small.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(small)]) == 0
    results = list(Path("runs").rglob("results.json"))
    assert len(results) == 1
    values = json.loads(results[0].read_text())
    if config["data"]["init_args"].get("dataset") == "folder_csv":  # own images without a test_csv
        assert "test/acc_last" not in values and values["report/n_samples"] > 0
    else:
        assert np.isfinite(values["test/acc_last"])


def test_every_logger_fragment_composes_with_the_quickstart(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    for fragment in FRAGMENTS:
        args = ["fit", "--config", str(CONFIGS / "quickstart_ce.yaml"), "--config", str(fragment),
                "--print_config"]  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 0, fragment


def test_every_run_config_is_self_contained() -> None:
    """Each run config holds its groups inline (docs/design.md, "Configs"): in one file jsonargparse drops a group
    given as a path or a `config:` base when a dotted key such as `data.init_args.noise.rate` sits beside it."""
    for path in RUN_CONFIGS:
        config = yaml.safe_load(path.read_text())
        assert not [key for key in config if "." in key or key == "config"], path.name
        for group in ("trainer", "model", "data"):
            assert isinstance(config.get(group), dict), f"{path.name}: {group} is not an inline mapping"
