"""CE's cross-fitted label report (`lnl.methods.crossfit`): network k never learns from the labels of fold k."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import seed_everything

from helpers.paths import CONFIGS
from helpers.synthetic import C, SynthData, fit, make_batch, sgd
from lnl.data.batch import Batch
from lnl.errors import ConfigError
from lnl.methods import CE
from lnl.methods.crossfit import CrossFitEnsemble, fold_of, mean_softmax_logits
from lnl.run.main import main

K = 3


def _ce(folds: int = K, seed: int = 0) -> CE:
    seed_everything(seed, verbose=False)
    return CE(num_classes=C, backbone="tiny_cnn", optimizer=sgd(0.1), cross_fit_folds=folds)


def _grads(model: CE, batch: Batch, y: torch.Tensor) -> list[list[torch.Tensor]]:
    """Each network's parameter gradients of the cross-fit loss on `batch` with labels `y` (train mode)."""
    model.zero_grad(set_to_none=True)
    noisy = batch.noisy
    ens = model.ensemble
    ens.loss(ens.members(noisy.x), y, noisy.index).backward()
    return [[p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in net.parameters()]
            for net in ens.nets]  # fmt: skip


def test_fold_labels_never_reach_their_network() -> None:
    model = _ce()
    model.train()
    batch = make_batch(0, 48, 0, clean=False)
    x, y, index = batch.noisy.x, batch.noisy.y, batch.noisy.index
    fold = fold_of(index, K, model.ensemble.fold_seed)
    assert all((fold == k).sum() >= 8 for k in range(K))  # every fold is in the batch
    state = {k: v.clone() for k, v in model.state_dict().items()}
    base = _grads(model, batch, y)
    for k in range(K):
        model.load_state_dict(state)  # BN running statistics as before
        changed = torch.where(fold == k, (y + 1) % C, y)  # every fold-k label replaced
        after = _grads(model, batch, changed)
        for j in range(K):
            same = all(torch.equal(a, b) for a, b in zip(base[j], after[j]))
            assert same == (j == k), (k, j)  # network k is blind to fold k's labels, the others see them
        assert any(g.abs().sum() > 0 for g in base[k])  # it learns from the other folds
    only_k = fold == 0
    model.zero_grad(set_to_none=True)
    members = model.ensemble.members(x[only_k])
    model.ensemble.loss(members, y[only_k], index[only_k]).backward()
    assert all(p.grad is None or not p.grad.any() for p in model.ensemble.nets[0].parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.ensemble.nets[1].parameters())


def test_out_of_fold_rows_and_the_ensemble_prediction() -> None:
    model = _ce()
    model.eval()
    x, index = make_batch(1, 16, 0, clean=False).noisy.x, torch.arange(100, 116)
    members = model.ensemble.members(x)
    oof = model.ensemble.out_of_fold(members, index)
    fold = model.ensemble.fold(index)
    for i in range(16):
        torch.testing.assert_close(oof[i], model.ensemble.nets[int(fold[i])](x[i : i + 1])[0])
    mean = torch.stack([torch.softmax(model.ensemble.nets[k](x), -1) for k in range(K)]).mean(0)
    torch.testing.assert_close(model.student(x).exp(), mean)  # val/test/predict: the mean softmax
    torch.testing.assert_close(mean_softmax_logits(members).exp().sum(1), torch.ones(16))


def _lowbias32(i: int, seed: int) -> int:
    """Python-integer reference of the fold hash (Wellons' lowbias32 of i + 0x9E3779B9·s mod 2^32)."""
    x = (i + 0x9E3779B9 * seed) % 2**32
    for shift, mul in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        x = ((x ^ (x >> shift)) * mul) % 2**32
    return x ^ (x >> 16)


def test_folds_are_seeded_balanced_and_restored_from_a_checkpoint(tmp_path) -> None:
    index = torch.arange(5000)
    for seed in (0, 7, 2**32 - 1, 2**40 + 3):
        got = fold_of(torch.tensor([0, 1, 12345, 2**31 + 7]), 5, seed).tolist()
        assert got == [_lowbias32(i, seed % 2**32) % 5 for i in (0, 1, 12345, 2**31 + 7)]
    for seed in (0, 7):
        counts = torch.bincount(fold_of(index, 5, seed), minlength=5)
        assert counts.min() > 900 and counts.max() < 1100, counts  # 1000 ± 3.2 binomial SD
    assert not torch.equal(fold_of(index, 5, 0), fold_of(index, 5, 7))
    model = _ce(seed=3)
    path = tmp_path / "state.pt"
    torch.save(model.state_dict(), path)
    other = _ce(seed=11)
    assert not torch.equal(other.ensemble.fold(index), model.ensemble.fold(index))
    other.load_state_dict(torch.load(path))
    assert torch.equal(other.ensemble.fold(index), model.ensemble.fold(index))


def test_cross_fit_records_out_of_fold_confidence_and_judges_with_it() -> None:
    model = fit(lambda: _ce(), data=SynthData(n_batches=3, b=8), max_epochs=2)
    model.eval()
    batch = make_batch(0, 8, 0, clean=False).noisy
    index = batch.index
    assert torch.equal(model.confidence.visits[index], torch.full((8,), 2.0, dtype=torch.float64))
    ev = model.label_evidence(batch.x, batch.y, index)
    oof = model.ensemble.out_of_fold(model.ensemble.members(batch.x), index)
    p = torch.softmax(oof.double(), -1).gather(1, batch.y[:, None]).squeeze(1)
    torch.testing.assert_close(
        ev.columns["student_loss"], -p.log()
    )  # judged by the network that never saw it
    unseen = model.label_evidence(batch.x, batch.y, index + 10_000)  # never trained on: all K networks
    torch.testing.assert_close(unseen.probs, torch.softmax(model.student(batch.x).double(), -1))


def test_bad_fold_counts_are_refused() -> None:
    for bad in (1, -2):
        try:
            CE(num_classes=C, backbone="tiny_cnn", cross_fit_folds=bad)
        except ConfigError as err:
            assert "model.cross_fit_folds" in str(err)
        else:
            raise AssertionError(bad)
    try:
        CrossFitEnsemble([torch.nn.Linear(2, 2)], seed=0)
    except ValueError:
        pass
    else:
        raise AssertionError("one network")


@pytest.mark.slow
def test_cross_fitted_report_finds_the_wrong_digits_labels() -> None:
    """Digits, 30 % symmetric noise, 8 epochs of the cross-fit config: the out-of-fold report ranks the wrong labels
    (AUROC ≥ 0.95), flags ≈ its noise estimate, and the fold networks learn (test accuracy ≥ 0.8)."""
    args = ["fit", "--config", str(CONFIGS / "quickstart_ce_crossfit.yaml"), "--trainer.max_epochs=8",
            "--trainer.enable_model_summary=false", "--trainer.enable_progress_bar=false",
            "--data.init_args.noise={kind: symmetric, rate: 0.3, count: exact}"]  # fmt: skip
    assert main(args) == 0
    results = json.loads(Path("runs/quickstart_ce_crossfit/version_0/results.json").read_text())
    assert results["report/auroc"] >= 0.95
    assert abs(results["report/noise_rate_estimate"] - 0.3) <= 0.1
    assert results["test/acc_best_val"] >= 0.8
