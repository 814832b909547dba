"""Tests for lnl.methods.selection: DML's small-loss selection with a memory bank and ratios R(c)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lnl.errors import ConfigError
from lnl.methods.selection import SmallLossSelector, selection_counts


def _fill(sel: SmallLossSelector, scores: torch.Tensor, labels: torch.Tensor, epoch: int = 0) -> torch.Tensor:
    return sel.select(torch.arange(scores.numel()), labels, scores, epoch)


def test_thresholds_are_per_class_quantiles_of_the_bank():
    g = torch.Generator().manual_seed(0)
    scores, labels = torch.rand(60, generator=g), torch.randint(0, 3, (60,), generator=g)
    sel = SmallLossSelector(3, rule="sign_drift", eps0=0.3)
    mask = _fill(sel, scores, labels)
    for c in range(3):
        expect = torch.quantile(scores[labels == c].double(), 0.3).item()
        assert sel.thresholds[c].item() == pytest.approx(expect, rel=1e-5)
        assert torch.equal(mask[labels == c], scores[labels == c] <= sel.thresholds[c])
    assert 0.25 < mask.float().mean().item() < 0.4


def test_bank_is_an_ema_and_thresholds_refresh_once_per_epoch_after_epoch0():
    sel = SmallLossSelector(2, rule="sign_drift", eps0=0.5, bank_momentum=0.9, refresh_every=None)
    idx, lab = torch.arange(4), torch.tensor([0, 0, 1, 1])
    sel.select(idx, lab, torch.tensor([1.0, 2.0, 3.0, 4.0]), epoch=0)
    assert torch.allclose(sel.bank, torch.tensor([1.0, 2.0, 3.0, 4.0]))  # first observation initialises
    sel.select(idx[:2], lab[:2], torch.tensor([0.0, 0.0]), epoch=1)
    assert torch.allclose(sel.bank[:2], torch.tensor([0.9, 1.8]))
    tau = sel.thresholds.clone()
    assert tau[0].item() == pytest.approx(1.35)  # refreshed at the first step of epoch 1
    sel.select(idx[:2], lab[:2], torch.tensor([0.0, 0.0]), epoch=1)
    assert torch.equal(sel.thresholds, tau)  # not refreshed again within epoch 1
    sel2 = SmallLossSelector(2, rule="sign_drift", eps0=0.5, refresh_every=2)
    for step in range(4):
        sel2.select(idx, lab, torch.full((4,), float(step)), epoch=1)
        if step == 2:
            assert sel2.thresholds[0].item() == pytest.approx(sel2.bank[:2].mean().item())


def test_unseen_class_threshold_is_inf_and_bank_grows():
    sel = SmallLossSelector(3, rule="sign_drift", num_samples=2, eps0=0.2)
    mask = sel.select(torch.tensor([5, 7]), torch.tensor([0, 0]), torch.tensor([0.1, 0.2]), 0)
    assert sel.bank.numel() == 8 and sel.thresholds[1].item() == float("inf")
    assert mask.tolist() == [True, False]  # quantile 0.2 of {0.1, 0.2} = 0.12


def test_warmup_keeps_eps0_then_ratio_moves_by_delta_and_clips():
    sel = SmallLossSelector(
        2, rule="sign_drift", eps0=0.2, delta=0.1, r_min=0.05, r_max=0.5, h_momentum=0.5, warmup_epochs=1
    )
    h_c, n_c = torch.tensor([1.0, -1.0]), torch.tensor([3.0, 2.0])
    sel.update_ratios(h_c, n_c, 0.0, epoch=0)
    assert torch.allclose(sel.ratio, torch.tensor([0.2, 0.2]))  # warm-up: R frozen, EMA accumulates
    assert torch.allclose(sel.h_ema, torch.tensor([0.5, -0.5]))
    assert torch.allclose(sel.current_ratio(0), torch.tensor([0.2, 0.2]))
    sel.update_ratios(h_c, n_c, 0.0, epoch=1)
    assert torch.allclose(sel.ratio, torch.tensor([0.3, 0.1]))
    for _ in range(5):
        sel.update_ratios(h_c, n_c, 0.0, epoch=1)
    assert torch.allclose(sel.ratio, torch.tensor([0.5, 0.05]))  # clipped to [r_min, r_max]
    before = sel.ratio.clone()
    sel.update_ratios(torch.tensor([-9.0, 9.0]), torch.tensor([0.0, 0.0]), 0.0, epoch=2)
    assert torch.equal(sel.ratio, before)  # classes absent from 𝒮 keep their EMA and ratio


def test_global_rule_uses_one_ratio_driven_by_global_h():
    sel = SmallLossSelector(3, rule="global", eps0=0.2, delta=0.05, warmup_epochs=0)
    sel.update_ratios(torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([1.0, 1.0, 1.0]), 0.3, epoch=0)
    assert torch.allclose(sel.ratio, torch.full((3,), 0.25))
    sel.update_ratios(torch.zeros(3), torch.zeros(3), 5.0, epoch=0)  # empty 𝒮: no update
    assert torch.allclose(sel.ratio, torch.full((3,), 0.25))


def test_empty_selection():
    sel = SmallLossSelector(2, rule="sign_drift", eps0=0.2, refresh_every=100)
    lab = torch.tensor([0, 0, 1, 1])
    sel.select(torch.arange(4), lab, torch.tensor([0.1, 0.2, 0.3, 0.4]), epoch=1)  # refresh at step 0
    mask = sel.select(torch.arange(4), lab, torch.full((4,), 50.0), epoch=1)  # all losses explode, no refresh
    assert not mask.any()
    counts = selection_counts(mask, lab, lab)
    assert counts.tolist() == [0.0, 0.0, 4.0]


def test_per_batch_rule_takes_ceil_ratio_smallest_per_class():
    sel = SmallLossSelector(2, rule="per_batch", eps0=0.3)
    scores = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.2, 0.8, 0.7])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    mask = sel.select(torch.arange(7), labels, scores, epoch=0)
    # k = ceil(0.3·4) = 2 of class 0 and ceil(0.3·3) = 1 of class 1
    assert mask.tolist() == [False, True, False, True, True, False, False]
    assert sel.bank.numel() == 0  # no bank


def test_schedule_rule_and_config_errors():
    sel = SmallLossSelector(2, rule="schedule", noise_rate=0.4, schedule_epochs=10)
    assert torch.allclose(sel.current_ratio(0), torch.ones(2))
    assert torch.allclose(sel.current_ratio(5), torch.full((2,), 0.8))
    assert torch.allclose(sel.current_ratio(50), torch.full((2,), 0.6))
    with pytest.raises(ConfigError, match="noise_rate"):
        SmallLossSelector(2, rule="schedule")
    with pytest.raises(ConfigError, match="selection.rule = 'bogus'"):
        SmallLossSelector(2, rule="bogus")
    with pytest.raises(ConfigError, match="r_min, r_max"):
        SmallLossSelector(2, r_min=0.5, r_max=0.2)


def test_state_dict_round_trip_restores_bank_ratios_and_selection():
    g = torch.Generator().manual_seed(1)
    sel = SmallLossSelector(3, rule="sign_drift", num_samples=10, eps0=0.4, warmup_epochs=0, delta=0.02)
    for step in range(3):
        idx = torch.randperm(30, generator=g)[:12]
        sel.select(idx, idx % 3, torch.rand(12, generator=g), epoch=step)
        sel.update_ratios(torch.randn(3, generator=g), torch.ones(3), 0.0, epoch=step)
    state = sel.state_dict()
    other = SmallLossSelector(3, rule="sign_drift", num_samples=0, eps0=0.4, warmup_epochs=0, delta=0.02)
    other.load_state_dict(state)
    for k, v in sel.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    idx, sc = torch.arange(12), torch.rand(12, generator=g)
    assert torch.equal(sel.select(idx, idx % 3, sc, 3), other.select(idx, idx % 3, sc, 3))


def test_selection_counts_ignore_unknown_truth():
    mask = torch.tensor([True, True, False, True])
    y, y_true = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 2, 2, -1])
    assert selection_counts(mask, y, y_true).tolist() == [2.0, 1.0, 2.0]


def test_selection_precision_beats_clean_rate_on_learnable_problem_with_40pct_symmetric_noise():
    """Linear model on Gaussian blobs trained on 40% symmetric noise: the selected subset is much cleaner."""
    g = torch.Generator().manual_seed(0)
    n, d, c = 1200, 10, 4
    y_true = torch.randint(0, c, (n,), generator=g)
    means = 2.5 * torch.randn(c, d, generator=g)
    x = means[y_true] + torch.randn(n, d, generator=g)
    flip = torch.rand(n, generator=g) < 0.4
    y = torch.where(flip, (y_true + torch.randint(1, c, (n,), generator=g)) % c, y_true)
    torch.manual_seed(0)
    model = nn.Linear(d, c)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sel = SmallLossSelector(c, rule="sign_drift", eps0=0.3, warmup_epochs=100)
    precision, clean_rate = [], []
    for epoch in range(4):
        perm = torch.randperm(n, generator=g)
        for b in range(0, n, 100):
            idx = perm[b : b + 100]
            loss = F.cross_entropy(model(x[idx]), y[idx], reduction="none")
            mask = sel.select(idx, y[idx], loss.detach(), epoch)
            counts = selection_counts(mask, y[idx], y_true[idx])
            if epoch >= 1:
                precision.append((counts[1] / counts[0]).item())
                clean_rate.append((y[idx] == y_true[idx]).float().mean().item())
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
    mean_precision, mean_clean = sum(precision) / len(precision), sum(clean_rate) / len(clean_rate)
    assert mean_clean == pytest.approx(0.6, abs=0.05)
    assert mean_precision > 0.9 > mean_clean


@pytest.mark.parametrize("preallocated", [True, False])
def test_duplicate_indices_take_their_first_occurrence(preallocated: bool) -> None:
    """DistributedSampler pads with repeated samples: each repeat writes its first occurrence's score and label."""
    sel = SmallLossSelector(3, rule="sign_drift", eps0=0.2, bank_momentum=0.5)
    if preallocated:
        sel.preallocate(4)
    sel.update_bank(torch.tensor([2, 2, 0]), torch.tensor([1, 2, 0]), torch.tensor([1.0, 5.0, 3.0]))
    assert sel.bank[[0, 2]].tolist() == [3.0, 1.0] and sel.bank_labels[[0, 1, 2]].tolist() == [0, -1, 1]
    sel.update_bank(torch.tensor([2, 2]), torch.tensor([1, 1]), torch.tensor([3.0, 9.0]))
    assert sel.bank[2].item() == 0.5 * 1.0 + 0.5 * 3.0  # EMA with the first copy only


def test_estimated_rule_warms_up_on_every_sample_then_follows_the_low_loss_component():
    g = torch.Generator().manual_seed(0)
    shares = (0.3, 0.8)
    scores, labels = [], []
    for c, share in enumerate(shares):  # a tight low-loss (clean) mode and a wide high-loss (noisy) one
        n_clean = int(share * 200)
        scores += [0.05 * torch.rand(n_clean, generator=g), 1.5 + torch.rand(200 - n_clean, generator=g)]
        labels.append(torch.full((200,), c))
    scores, labels = torch.cat(scores), torch.cat(labels)
    sel = SmallLossSelector(2, warmup_epochs=2, schedule_epochs=4, max_rise=None)
    sel.update_evidence(torch.arange(400), torch.zeros(400))
    mask = sel.select(torch.arange(400), labels, scores, epoch=0)
    assert bool(mask.all())  # warm-up: ε0 = 1, every sample
    sel.select(torch.arange(400), labels, scores, epoch=2)  # first estimate, ramp 3/4 of the way to 1
    assert torch.allclose(sel.ratio, torch.tensor(shares, dtype=sel.ratio.dtype), atol=0.01)
    r = sel.current_ratio(2)
    assert torch.allclose(r, sel.ratio + (1 - sel.ratio) * 0.75)
    assert torch.allclose(sel.current_ratio(5), sel.ratio)  # schedule done: R(c) = the estimate


def test_estimated_rule_rises_by_at_most_max_rise_per_refresh():
    sel = SmallLossSelector(1, warmup_epochs=0, max_rise=0.02)
    low = torch.cat([torch.zeros(50), torch.ones(150) * 3]) + 0.01 * torch.arange(200) / 200
    sel.update_evidence(torch.arange(200), torch.zeros(200))
    sel.select(torch.arange(200), torch.zeros(200, dtype=torch.long), low, epoch=0)
    first = float(sel.ratio[0])
    assert first == pytest.approx(0.25, abs=0.01)
    high = torch.cat([torch.zeros(180), torch.ones(20) * 3])
    sel2_scores = high + 0.01 * torch.arange(200) / 200
    sel.bank.copy_(sel2_scores)  # the losses now say 90% clean
    sel.refresh_thresholds(epoch=1)
    assert float(sel.ratio[0]) == pytest.approx(first + 0.02, abs=1e-6)


def test_confident_estimator_counts_the_bank_scores_below_ln2_per_group():
    # group 0: 30 of 100 scores below ln 2 (p(ỹ | x) > 1/2), 30 just above it (0.8-0.9, not yet confident), 40 high;
    # group 1: 70 of 100 below. The GMM lumps the middle mode with the low one; `confident` counts only p > 1/2.
    g = torch.Generator().manual_seed(0)
    parts = [0.6 * torch.rand(30, generator=g), 0.8 + 0.1 * torch.rand(30, generator=g),
             3.0 + torch.rand(40, generator=g), 0.6 * torch.rand(70, generator=g), 3.0 + torch.rand(30, generator=g)]  # fmt: skip
    scores = torch.cat(parts)
    labels = torch.cat([torch.zeros(100, dtype=torch.long), torch.ones(100, dtype=torch.long)])
    shares = {}
    for estimator in ("confident", "gmm"):
        sel = SmallLossSelector(2, warmup_epochs=0, max_rise=None, estimator=estimator)
        sel.update_evidence(torch.arange(200), torch.zeros(200))
        _fill(sel, scores, labels, epoch=0)
        shares[estimator] = sel.ratio.tolist()
    assert shares["confident"] == pytest.approx([0.30, 0.70], abs=1e-6)
    assert shares["gmm"][0] == pytest.approx(0.60, abs=0.02)  # the GMM's low component takes both low modes


def test_bad_estimator_is_a_config_error():
    with pytest.raises(ConfigError, match="selection.estimator = 'mode'"):
        SmallLossSelector(2, estimator="mode")


def test_cumulative_h_selects_losses_under_eps0_plus_the_summed_feedback():
    """Eq. 8 read literally: after warm-up, i ∈ 𝒮 ⇔ current score ≤ ε0 + Σ_t h_t (one threshold for all groups)."""
    sel = SmallLossSelector(2, rule="cumulative_h", h_eps0=0.1, warmup_epochs=1)
    idx, lab = torch.arange(6), torch.tensor([0, 0, 0, 1, 1, 1])
    scores = torch.tensor([0.05, 0.25, 0.9, 0.08, 0.5, 2.0])
    assert _fill(sel, scores, lab, epoch=0).all()  # warm-up: every sample (R = eps0 = 1)
    before, after = torch.ones(6), torch.ones(6)
    for h in (0.15, 0.1, -0.05):  # signed feedback of three steps: Σ h = 0.2
        sel.record_feedback(idx, lab, torch.ones(6, dtype=torch.bool), before, after, torch.tensor(h), 0)
    assert sel.h_threshold() == pytest.approx(0.3)
    mask = sel.select(idx, lab, scores, epoch=1)
    assert mask.tolist() == [True, True, False, True, False, False]
    # the logged R(c): share of each group's bank scores under the threshold (bank = EMA of the two calls)
    assert sel.current_ratio(1).tolist() == pytest.approx([2 / 3, 1 / 3])
    sel.record_feedback(idx, lab, mask, before, after, torch.tensor(0.25), 1)  # the threshold rises with Σ h
    assert sel.select(idx, lab, scores, epoch=1).tolist() == [True, True, False, True, True, False]
    with pytest.raises(ConfigError, match="h_eps0"):
        SmallLossSelector(2, rule="cumulative_h", h_eps0=0.0)


def test_a_checkpoint_from_before_cumulative_h_loads_with_zero_feedback_sum():
    sel = SmallLossSelector(3, num_samples=10)
    state = sel.state_dict()
    state["h_sum"].fill_(2.5)
    old = {k: v for k, v in state.items() if k != "h_sum"}  # written before the `cumulative_h` rule existed
    sel.load_state_dict(state)
    assert float(sel.h_sum) == 2.5
    sel.load_state_dict(old)
    assert float(sel.h_sum) == 0.0
    with pytest.raises(RuntimeError, match="bank_labels"):
        sel.load_state_dict({k: v for k, v in old.items() if k != "bank_labels"})  # nothing else is defaulted
