"""DML's selection does its job: R(c) tracks each class's clean share; feedback survives bf16 and momentum."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from helpers.paths import CONFIGS
from lnl.hypergrad import Lookahead, lookahead_feedback
from lnl.hypergrad.feedback import ExactFeedback, first_order_feedback
from lnl.methods.dml import DML
from lnl.methods.mixture import two_segment_split
from lnl.methods.selection import SelectionConfig

SHARES = (0.3, 0.45, 0.6, 0.75, 0.9)  # clean share of each noisy label class
C = len(SHARES)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SharesSet(Dataset):
    """Prototype images (1x4x4) whose noisy label c is right for a SHARES[c] share of the samples labelled c.

    The wrong labels of class c come uniformly from the other classes' images, so every class is still learnable.
    """

    def __init__(self, per_label: int = 160, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        protos = 1.5 * torch.randn(C, 1, 4, 4, generator=g)
        y, y_true = [], []
        for c, share in enumerate(SHARES):
            n_clean = round(share * per_label)
            others = torch.tensor([k for k in range(C) if k != c])
            wrong = others[torch.randint(0, C - 1, (per_label - n_clean,), generator=g)]
            y_true.append(torch.cat([torch.full((n_clean,), c), wrong]))
            y.append(torch.full((per_label,), c))
        self.y, self.y_true = torch.cat(y), torch.cat(y_true)
        n = self.y.numel()
        self.weak = protos[self.y_true] + 0.4 * torch.randn(n, 1, 4, 4, generator=g)
        self.strong = self.weak + 0.3 * torch.randn(n, 1, 4, 4, generator=g)

    def __len__(self) -> int:
        return self.y.numel()

    def __getitem__(self, i: int) -> dict[str, Any]:
        x = {"weak": self.weak[i], "strong": self.strong[i]}
        return {"noisy": {"x": x, "y": self.y[i], "y_true": self.y_true[i], "index": i}}


class SharesData(L.LightningDataModule):
    def __init__(self, batch_size: int = 40) -> None:
        super().__init__()
        self.data, self.batch_size, self.train_size = SharesSet(), batch_size, None

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True, generator=g)


def fit_shares(tmp_path: Path, selection: SelectionConfig, epochs: int) -> DML:
    torch.manual_seed(0)
    model = DML(
        num_classes=C, in_chans=1, backbone="tiny_mlp", lam=0.5, alpha=0.0, score_net="teacher",
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        teacher_optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), selection=selection,
    )  # fmt: skip
    L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path)).fit(
        model, datamodule=SharesData()
    )  # fmt: skip
    return model


@pytest.mark.slow
def test_estimated_ratios_track_unequal_clean_shares_and_sign_drift_does_not(tmp_path):
    shares = torch.tensor(SHARES)
    new = fit_shares(tmp_path, SelectionConfig(rule="estimated", schedule_epochs=4), epochs=20)
    err_new = (new.selector.current_ratio(new.current_epoch) - shares).abs()
    assert err_new.max() < 0.03, err_new  # no noise rate was given (measured: max 0.0087)
    old = fit_shares(tmp_path, SelectionConfig(rule="sign_drift", eps0=0.5, delta=0.01), epochs=20)
    err_old = (old.selector.current_ratio(old.current_epoch) - shares).abs()
    assert err_old.mean() > 0.2, err_old  # the literal rule drifts towards r_max, whatever the shares (0.35)
    last = new.diagnostics.history[-1]
    assert last["R_err"] < 0.01 and last["precision"] > 0.98  # the diagnostics see the same (0.0017, 1.0)


def test_two_segment_split_finds_the_step():
    values = torch.cat([torch.full((30,), 0.1), torch.full((70,), 2.0)]) + 0.01 * torch.randn(100)
    assert two_segment_split(values.double()) == 30


class _Probe(Callback):
    """Records h of every training step."""

    def __init__(self) -> None:
        self.h: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.h.append(float(trainer.callback_metrics["train/h"]))


def _one_step_h(tmp_path: Path, precision: str) -> float:
    torch.manual_seed(0)
    model = DML(num_classes=C, in_chans=1, backbone="tiny_cnn", pseudo_label="argmax",
                optimizer=lambda p: torch.optim.SGD(p, lr=5e-4, momentum=0.9),
                selection=SelectionConfig(eps0=1.0))  # fmt: skip
    probe = _Probe()
    L.Trainer(accelerator="cpu", max_steps=1, precision=precision, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, callbacks=[probe],
              default_root_dir=str(tmp_path)).fit(model, datamodule=SharesData(batch_size=64))  # fmt: skip
    return probe.h[0]


def test_feedback_under_bf16_autocast_matches_fp32_at_small_lr(tmp_path):
    h32, h16 = _one_step_h(tmp_path, "32"), _one_step_h(tmp_path, "bf16-mixed")
    assert h32 != 0 and abs(h16 - h32) <= 0.02 * abs(h32), (h16, h32)


def test_first_order_and_exact_feedback_agree_in_sign_under_momentum(tmp_path, monkeypatch):
    """Both read the same momentum-free look-ahead (Eq. 4, 7), so momentum 0.9 no longer separates them."""
    signs: list[tuple[float, float]] = []
    original = ExactFeedback.__call__

    def both(self, look, mask, *args):  # noqa: ANN001
        h = original(self, look, mask, *args)
        signs.append((float(h), float(first_order_feedback(look.before, look.after, mask)[0])))
        return h

    monkeypatch.setattr(ExactFeedback, "__call__", both)
    torch.manual_seed(0)
    model = DML(num_classes=C, in_chans=1, backbone="tiny_cnn", feedback="exact", alpha=0.0,
                optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
                selection=SelectionConfig(eps0=0.5, warmup_epochs=1))  # fmt: skip
    L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=str(tmp_path)).fit(model, datamodule=SharesData())  # fmt: skip
    agree = [(a > 0) == (b > 0) for a, b in signs if a != 0]
    assert len(agree) >= 30 and sum(agree) / len(agree) >= 0.9


def test_lookahead_feedback_is_first_order_in_the_step():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, C)).double()
    x, y = torch.randn(20, 1, 4, 4).double(), torch.randint(0, C, (20,))
    loss = torch.nn.functional.cross_entropy(net(x), (y + 1) % C)
    g = dict(zip([n for n, _ in net.named_parameters()], torch.autograd.grad(loss, list(net.parameters()))))
    errs = []
    for lr in (1e-2, 1e-3):
        look = lookahead_feedback(net, x, y, g, Lookahead.constant(lr, g), graph_after=True)
        grads = torch.autograd.grad(look.after.mean(), list(look.params_after.values()))
        exact = lr * sum((a * b).sum() for a, b in zip(grads, g.values()))
        errs.append(float(((look.before - look.after).mean() - exact).abs() / exact.abs()))
    assert errs[1] < errs[0] / 5  # relative gap shrinks linearly with η


@pytest.mark.slow
def test_quickstart_draws_the_selection_and_logs_it_to_wandb(in_tmp: Path):
    """A real `lnl fit` (own process: one W&B service per run) writes the PNG and logs it as a W&B image."""
    configs = CONFIGS
    args = [sys.executable, "-m", "lnl", "fit", "--config", str(configs / "quickstart.yaml"),
            "--config", str(configs / "logger" / "wandb.yaml"), "--trainer.max_epochs=3",
            "--trainer.limit_train_batches=6", "--trainer.enable_progress_bar=false",
            "--model.init_args.selection.schedule_epochs=1"]  # fmt: skip
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = Path("runs/quickstart/version_0")
    png = (run / "dml_selection.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    with open(run / "metrics.csv") as f:
        header = [h.strip() for h in f.readline().split(",")]
    for key in ("train/sel_precision_epoch", "train/sel_recall_epoch", "train/R_err", "train/clean_share_c000",
                "train/R_c009", "train/sel_precision", "train/R_mean"):  # fmt: skip
        assert key in header, key
    images = list(Path("runs/wandb").glob("offline-run-*/files/media/images/dml/selection*.png"))
    assert images and images[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_h_baseline_is_the_moving_average_of_h(tmp_path):
    torch.manual_seed(0)
    model = DML(num_classes=C, in_chans=1, backbone="tiny_mlp", h_baseline=0.5, alpha=0.0,
                selection=SelectionConfig(eps0=0.5))  # fmt: skip
    probe = _Probe()
    L.Trainer(accelerator="cpu", max_steps=12, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[probe], default_root_dir=str(tmp_path)).fit(
        model, datamodule=SharesData()
    )  # fmt: skip
    ema = 0.0
    for h in probe.h:
        ema = 0.5 * ema + 0.5 * h
    assert len(probe.h) == 6 and any(h != 0 for h in probe.h)
    assert float(model.h_mean) == pytest.approx(ema, rel=1e-5, abs=1e-9)


def test_bank_auroc_ranks_wrong_labels_by_their_bank_score():
    """`train/bank_auroc`: 1 when every wrong label's EMA score is above every right one, 0 reversed, unseen ignored."""
    from lnl.methods.dml_diagnostics import bank_auroc
    from lnl.methods.selection import SmallLossSelector

    sel = SmallLossSelector(2, num_samples=6)
    sel.update_bank(torch.arange(5), torch.tensor([0, 0, 1, 1, 0]), torch.tensor([0.1, 0.2, 0.9, 0.3, 2.0]))
    flag = torch.tensor([1.0, 1.0, 0.0, 1.0, -1.0, 0.0])  # index 4: truth unknown; index 5: never seen
    assert bank_auroc(sel, flag) == pytest.approx(1.0)
    assert bank_auroc(sel, torch.tensor([0.0, 0.0, 1.0, 0.0, -1.0, 1.0])) == pytest.approx(0.0)
    flag[0] = 0.0  # a wrong label with the lowest score: 2 wrong x 2 right pairs, 2 ordered right
    assert bank_auroc(sel, flag) == pytest.approx(0.5)
