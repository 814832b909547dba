"""What runs after `fit`: the report on the trainer's device, DDP built on the forwards' stream (lnl/run/ddp.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

import lnl.run.ddp
import lnl.run.fit_report
from helpers.paths import CONFIGS
from lnl.methods.base import LNLModule
from lnl.run.ddp import CurrentStreamDDPStrategy, build_ddp_on_current_stream
from lnl.run.main import main


def test_the_end_of_fit_report_runs_on_the_trainers_device_not_where_teardown_left_the_model(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's teardown after each `fit` / `test` calls `module.cpu()`; on a GPU the report then ran on the CPU
    for minutes (issue 19's "hang"). The last placement before the report must be a move to the root device."""
    events: list[Any] = []
    cpu, to = LNLModule.cpu, LNLModule.to
    monkeypatch.setattr(LNLModule, "cpu", lambda self: (events.append("cpu"), cpu(self))[1])
    monkeypatch.setattr(
        LNLModule, "to", lambda self, *a, **k: (events.append(("to", a, k)), to(self, *a, **k))[1]
    )
    collect = lnl.run.fit_report.collect_label_report
    monkeypatch.setattr(
        lnl.run.fit_report, "collect_label_report",
        lambda model, *a, **k: (events.append(("report", next(model.parameters()).device)), collect(model, *a, **k))[1],
    )  # fmt: skip
    args = ["fit", "--config", str(CONFIGS / "quickstart_ce.yaml"), "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"]  # fmt: skip
    assert main(args) == 0
    report = next(i for i, e in enumerate(events) if e[0] == "report")
    assert "cpu" in events[:report]  # Lightning's teardown moved the module (a no-op on a CPU run)
    placement = [e for e in events[:report] if e == "cpu" or e[0] == "to"][-1]
    assert placement[0] == "to" and torch.device(placement[1][0]) == torch.device("cpu")  # root device


def test_ddp_is_built_on_the_current_stream_not_on_a_side_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's DDPStrategy builds DDP inside `torch.cuda.stream(torch.cuda.Stream())` (the AccumulateGrad stream
    mismatch on CUDA); ours does not. CUDA calls are recorded, not made."""
    seen: list[str] = []
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: seen.append("side stream") or object())
    monkeypatch.setattr(
        torch.cuda, "stream", lambda s: seen.append("enter") or torch.autograd.grad_mode.no_grad()
    )
    built: list[dict] = []

    def fake_ddp(**kwargs: Any) -> str:
        built.append(kwargs)
        return "ddp"

    import lightning.pytorch.strategies.ddp as lightning_ddp

    monkeypatch.setattr(lightning_ddp, "DistributedDataParallel", fake_ddp)
    monkeypatch.setattr(lnl.run.ddp, "DistributedDataParallel", fake_ddp)
    module = torch.nn.Linear(2, 2)
    for cls in (DDPStrategy, CurrentStreamDDPStrategy):
        strategy = DDPStrategy()
        if cls is CurrentStreamDDPStrategy:
            build_ddp_on_current_stream(strategy)
        assert type(strategy) is cls
        monkeypatch.setattr(strategy, "determine_ddp_device_ids", lambda: [0])  # as on one GPU
        seen.clear()
        assert strategy._setup_model(module) == "ddp"
        assert seen == (["side stream", "enter"] if cls is DDPStrategy else [])
    assert built[-1]["module"] is module and built[-1]["device_ids"] == [0]


def test_only_a_plain_ddp_strategy_is_changed() -> None:
    from lightning.pytorch.strategies import SingleDeviceStrategy

    strategy = SingleDeviceStrategy(device=torch.device("cpu"))
    build_ddp_on_current_stream(strategy)
    assert type(strategy) is SingleDeviceStrategy
