"""DML-specific tests: options, BN hygiene and diagnostics of one step, feedback sign, selection rules under DDP.

What every method shares (fp16 refused, one step per network, resume, bf16, y_true unused, DDP with the
default rule) is in test_shared_properties.py.
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lnl.errors import ConfigError
from lnl.methods.dml import DML
from lnl.methods.selection import SelectionConfig

C = 4
pytestmark = pytest.mark.usefixtures("one_thread")


class ToySet(Dataset):
    """4 classes of noisy copies of random 4x4 prototypes; strong view = weak view + more noise; 40% sym. noise."""

    def __init__(self, n: int = 64, noise: float = 0.4, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.protos = torch.randn(C, 1, 4, 4, generator=g)
        self.y_true = torch.randint(0, C, (n,), generator=g)
        self.weak = self.protos[self.y_true] + 0.3 * torch.randn(n, 1, 4, 4, generator=g)
        self.strong = self.weak + 0.3 * torch.randn(n, 1, 4, 4, generator=g)
        flip = torch.rand(n, generator=g) < noise
        self.y = torch.where(flip, (self.y_true + torch.randint(1, C, (n,), generator=g)) % C, self.y_true)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        x = {"weak": self.weak[i], "strong": self.strong[i]}
        return {"noisy": {"x": x, "y": self.y[i], "y_true": self.y_true[i], "index": i}}


class ToyData(L.LightningDataModule):
    """Rank-aware loader: with R ranks each gets every R-th sample of the same (seeded) order."""

    def __init__(self, batch_size: int, shuffle: bool = False, **kwargs: Any) -> None:
        super().__init__()
        self.batch_size, self.shuffle, self.data = batch_size, shuffle, ToySet(**kwargs)

    def train_dataloader(self) -> DataLoader:
        t = self.trainer
        sampler = DistributedSampler(self.data, t.world_size, t.global_rank, shuffle=self.shuffle, seed=0)
        return DataLoader(self.data, batch_size=self.batch_size, sampler=sampler)


def make_dml(**kwargs: Any) -> DML:
    torch.manual_seed(0)
    opts = {
        "optimizer": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
        "teacher_optimizer": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
        "selection": SelectionConfig(warmup_epochs=1, delta=0.01),
        "uda_threshold": 0.3,
        "backbone": "tiny_cnn",
    }
    return DML(num_classes=C, in_chans=1, **(opts | kwargs))


def trainer(tmp_path: Path, **kwargs: Any) -> L.Trainer:
    base = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(tmp_path)}  # fmt: skip
    return L.Trainer(**(base | kwargs))


class Record(Callback):
    def __init__(self) -> None:
        self.h: list[float] = []
        self.batches: list[Any] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
        self.batches.append(copy.deepcopy(batch))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.h.append(float(trainer.callback_metrics["train/h"]))


def test_bad_options_are_config_errors():
    for kwargs, match in (({"feedback": "second"}, "feedback = 'second'"),
                          ({"feedback_sign": "flip"}, "feedback_sign = 'flip'"),
                          ({"pseudo_label": "soft"}, "pseudo_label = 'soft'"),
                          ({"lam": 1.5}, "lam = 1.5"),
                          ({"score_net": "peer"}, "score_net = 'peer'"),
                          ({"selection": SelectionConfig(rule="topk")}, "selection.rule = 'topk'")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            make_dml(**kwargs)


@pytest.mark.parametrize("feedback,score_net", [("first_order", "student"), ("exact", "both")])
def test_bn_stats_only_in_real_forwards_and_selection_logged(tmp_path, feedback, score_net):
    model = make_dml(feedback=feedback, score_net=score_net)
    student0, teacher0 = copy.deepcopy(model.student), copy.deepcopy(model.teacher)
    rec = Record()
    trainer(tmp_path, max_steps=2, callbacks=[rec]).fit(model, datamodule=ToyData(16))  # 2 optimizer steps
    assert int(model.steps_done) == 1
    for net, net0 in ((model.student, student0), (model.teacher, teacher0)):
        assert any(not torch.equal(p, p0) for p, p0 in zip(net.parameters(), net0.parameters()))
        bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns and all(int(m.num_batches_tracked) == 1 for m in bns)  # exactly one real training forward
    # the student's running statistics are exactly those of one train-mode forward on the strong view
    x = rec.batches[0]["noisy"]["x"]
    student0.train()(x["strong"])
    for name, buf in model.student.named_buffers():
        assert torch.allclose(buf, dict(student0.named_buffers())[name], atol=1e-7), name
    metrics = rec.h and model.trainer.callback_metrics
    for key in ("train/h", "train/selected_frac", "train/R_mean", "train/R_min", "train/R_max",
                "train/sel_precision", "train/sel_recall", "train/R_c000"):  # fmt: skip
        assert key in metrics and torch.isfinite(metrics[key]), key


class NearestPrototype(nn.Module):
    """A perfect teacher for ToySet: logits = −10·‖x − p_c‖² (up to a constant per sample)."""

    def __init__(self, protos: torch.Tensor) -> None:
        super().__init__()
        p = protos.flatten(1)
        self.fc = nn.Linear(p.shape[1], C)
        with torch.no_grad():
            self.fc.weight.copy_(20 * p)
            self.fc.bias.copy_(-10 * (p * p).sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.mark.slow
def test_mean_feedback_is_positive_with_a_perfect_teacher_and_flips_with_mpl_sign(tmp_path):
    data = ToyData(16, shuffle=True, n=128, noise=0.2)
    assert (
        NearestPrototype(data.data.protos)(data.data.strong).argmax(1) == data.data.y_true
    ).float().mean() > 0.95
    h = {}
    for sign in ("paper", "mpl_code"):
        model = make_dml(feedback_sign=sign, teacher_optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
        model.teacher = NearestPrototype(data.data.protos)
        rec = Record()
        trainer(tmp_path, max_epochs=4, callbacks=[rec]).fit(model, datamodule=data)
        h[sign] = torch.tensor(rec.h)
    assert h["paper"].mean() > 0 and (h["paper"] > 0).float().mean() > 0.7
    assert torch.allclose(h["mpl_code"], -h["paper"], atol=1e-6)  # a frozen teacher: same run, opposite sign


def _fit_ddp_or_single(tmp_path: Path, devices: int, feedback: str, rule: str) -> dict[str, torch.Tensor]:
    model = make_dml(backbone="tiny_mlp", pseudo_label="argmax", feedback=feedback,
                     selection=SelectionConfig(rule=rule, eps0=0.2, warmup_epochs=1, delta=0.01, refresh_every=2))  # fmt: skip
    strategy = "ddp_notebook" if devices > 1 else "auto"
    trainer(tmp_path, max_epochs=3, devices=devices, strategy=strategy).fit(
        model, datamodule=ToyData(16 // devices)
    )
    return {k: v.detach().double().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.xdist_group("ddp")
@pytest.mark.parametrize("feedback,rule", [("first_order", "sign_drift"), ("exact", "global")])
def test_selection_rules_under_two_process_ddp_equal_one_process_with_double_batch(tmp_path, feedback, rule):
    """The rules' all-gathered state (bank, ratios, global h) under DDP; the default rule is a shared property."""
    single = _fit_ddp_or_single(tmp_path, 1, feedback, rule)
    ddp = _fit_ddp_or_single(tmp_path, 2, feedback, rule)
    assert int(single["steps_done"]) == int(ddp["steps_done"]) == 12
    moved = single["selector.h_ema_global"] if rule == "global" else single["selector.ratio"] - 0.2
    assert moved.abs().max() > 0  # the rule's state moved after warm-up
    assert bool(single["selector.evidence_seen"].all())
    for key, value in single.items():
        tol = 1e-3 if key == "selector.evidence" else 1e-5  # normalised differences of two near-equal losses
        assert torch.allclose(value, ddp[key], atol=tol, rtol=0), key


def test_sync_dist_advice_is_silenced_for_dml_epoch_values_only(tmp_path):
    """Under a process group Lightning advises `sync_dist=True` once per epoch-level tensor; DML's are reduced by
    hand, and the filter `lnl fit` installs drops the advice for exactly those keys."""
    from lightning.pytorch.trainer.connectors.logger_connector.result import warning_cache
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    from lnl.methods.dml_diagnostics import PRESYNCED_EPOCH_KEYS
    from lnl.run.console import silence_presynced_advice

    def advised(caught: list[warnings.WarningMessage]) -> set[str]:
        found = (re.match(r"It is recommended to use `self.log\('([^']+)'", str(w.message)) for w in caught)
        return {m.group(1) for m in found if m}

    warning_cache.clear()  # Lightning warns once per message and process
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer(tmp_path, max_epochs=2).fit(make_dml(), datamodule=ToyData(16))
    finally:
        dist.destroy_process_group()
    keys = advised(caught)
    assert {
        "train/h_epoch",
        "train/R_c000",
        "train/R_err",
        "train/sel_precision_epoch",
        "train/evidence_tpr",
    } <= keys
    assert all(re.fullmatch(PRESYNCED_EPOCH_KEYS, k) for k in keys), keys
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_presynced_advice()
        for key in (*sorted(keys), "train/loss", "train/R_c000_extra"):
            warnings.warn(
                f"It is recommended to use `self.log('{key}', ..., sync_dist=True)`",
                PossibleUserWarning,
                stacklevel=1,
            )
    assert advised(caught) == {"train/loss", "train/R_c000_extra"}
