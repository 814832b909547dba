"""The README's multi-node recipe for Clothing1M: the Trainer that `lnl fit` builds from a Clothing1M config, with
`--trainer.num_nodes=2 --trainer.devices=8 --trainer.strategy=ddp`, under SLURM (`srun lnl fit ...`) and torchrun
(`torchrun --nnodes 2 --nproc-per-node 8 ... -m lnl fit ...`) environment variables, finds its cluster
environment, global rank and world size. No process group is initialised (`accelerator: cpu` stands in for gpu).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import DDPStrategy

from helpers.paths import CONFIGS

CLOTHING = sorted(CONFIGS.glob("*_clothing1m.yaml"))
CLUSTER_VARS = ("SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID",
                "SLURM_JOB_NAME", "SLURM_JOB_ID", "SLURM_NODELIST", "RANK", "LOCAL_RANK", "WORLD_SIZE",
                "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")  # fmt: skip


def recipe_trainer(config: Path, tmp_path: Path) -> Trainer:
    """The config's trainer section with the recipe's overrides, as `lnl fit` would build it (CPU stand-in)."""
    trainer: dict[str, Any] = yaml.safe_load(config.read_text())["trainer"]
    trainer.pop("logger", None)
    trainer.update(num_nodes=2, devices=8, strategy="ddp", accelerator="cpu", default_root_dir=str(tmp_path),
                   logger=False, enable_checkpointing=False)  # fmt: skip
    return Trainer(**trainer)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in CLUSTER_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("config", CLOTHING, ids=[p.stem for p in CLOTHING])
def test_slurm_two_nodes_of_eight(config: Path, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # task 11 of 16: node 1, local rank 3 (what `srun` sets for `#SBATCH --nodes=2 --ntasks-per-node=8`)
    env = {"SLURM_NTASKS": "16", "SLURM_NTASKS_PER_NODE": "8", "SLURM_PROCID": "11", "SLURM_LOCALID": "3",
           "SLURM_NODEID": "1", "SLURM_JOB_NAME": "lnl-clothing1m", "SLURM_JOB_ID": "123456",
           "SLURM_NODELIST": "gpu-node[07-08]"}  # fmt: skip
    for key, value in env.items():
        clean_env.setenv(key, value)
    trainer = recipe_trainer(config, tmp_path)
    environment = trainer.strategy.cluster_environment
    assert isinstance(trainer.strategy, DDPStrategy) and isinstance(environment, SLURMEnvironment)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (11, 3, 1, 16)
    assert environment.main_address == "gpu-node07" and not trainer.is_global_zero
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("config", CLOTHING, ids=[p.stem for p in CLOTHING])
def test_torchrun_two_nodes_of_eight(config: Path, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # worker 13 of 16: node (group) 1, local rank 5 (what `torchrun --nnodes 2 --nproc-per-node 8` sets)
    env = {"RANK": "13", "LOCAL_RANK": "5", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "GROUP_RANK": "1",
           "MASTER_ADDR": "gpu-node07", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "lnl-clothing1m"}  # fmt: skip
    for key, value in env.items():
        clean_env.setenv(key, value)
    trainer = recipe_trainer(config, tmp_path)
    environment = trainer.strategy.cluster_environment
    assert isinstance(trainer.strategy, DDPStrategy) and isinstance(environment, TorchElasticEnvironment)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (13, 5, 1, 16)
    assert (environment.main_address, environment.main_port) == ("gpu-node07", 29500)
    assert not torch.distributed.is_initialized()
