from __future__ import annotations

import torch
import torch.nn.functional as F

from lnl.losses import (
    accuracy,
    kd_loss,
    masked_sum,
    nt_xent,
    smoothed_cross_entropy,
    soft_cross_entropy,
    uda_consistency,
)


def test_soft_ce_with_onehot_equals_ce() -> None:
    logits, labels = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 3, 1, 2, 2])
    torch.testing.assert_close(
        soft_cross_entropy(logits, F.one_hot(labels, 4).double()), F.cross_entropy(logits, labels)
    )


def test_smoothed_ce_matches_its_definition() -> None:
    logits, labels, s = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 5, (6,)), 0.1
    target = (1 - s) * F.one_hot(labels, 5).double() + s / 5
    torch.testing.assert_close(smoothed_cross_entropy(logits, labels, s), soft_cross_entropy(logits, target))


def test_kd_is_zero_for_equal_logits_and_scaled_kl_otherwise() -> None:
    t = torch.randn(3, 4, dtype=torch.float64)
    assert kd_loss(t, t, 0.7).abs() < 1e-12
    s = torch.randn(3, 4, dtype=torch.float64)
    kl = F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), log_target=True, reduction="batchmean")
    torch.testing.assert_close(kd_loss(s, t, 2.0), 4 * kl)


def test_uda_masks_unconfident_samples_and_stops_gradient_to_weak_view() -> None:
    weak = torch.tensor([[10.0, 0.0], [0.1, 0.0]], requires_grad=True)
    strong = torch.randn(2, 2, requires_grad=True)
    loss, mask = uda_consistency(weak, strong, temperature=1.0, threshold=0.9)
    assert mask.tolist() == [1.0, 0.0]
    loss.backward()
    assert weak.grad is None and strong.grad[1].abs().sum() == 0 and strong.grad[0].abs().sum() > 0


def test_kept_rows_equal_boolean_indexing_without_it() -> None:
    weak, strong = torch.randn(6, 3, dtype=torch.float64) * 3, torch.randn(6, 3, dtype=torch.float64)
    keep = torch.tensor([True, False, True, True, False, True])
    weak[1], strong[4] = float("nan"), float("inf")  # dropped rows must not leak into the kept ones
    loss, mask = uda_consistency(weak, strong, 1.0, 0.6, keep=keep)
    ref, ref_mask = uda_consistency(weak[keep], strong[keep], 1.0, 0.6)
    torch.testing.assert_close(loss, ref, rtol=1e-15, atol=0)
    assert mask[keep].tolist() == ref_mask.tolist() and mask[~keep].abs().sum() == 0
    none = torch.zeros(6, dtype=torch.bool)
    assert uda_consistency(weak, strong, 1.0, 0.6, keep=none)[0] == 0
    values = torch.randn(6, dtype=torch.float64).masked_fill(~keep, float("nan"))
    torch.testing.assert_close(masked_sum(values, keep), values[keep].sum(), rtol=1e-15, atol=0)


def test_nt_xent_matches_a_per_anchor_loop() -> None:
    z1, z2, t = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64), 0.3
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    terms = []
    for a in range(10):
        p = (a + 5) % 10
        others = [k for k in range(10) if k != a]
        denom = torch.stack([torch.exp(z[a] @ z[k] / t) for k in others]).sum()
        terms.append(-torch.log(torch.exp(z[a] @ z[p] / t) / denom))
    torch.testing.assert_close(nt_xent(z1, z2, t).double(), torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)
    assert nt_xent(z1, z1 + 1e-3, 0.1) < nt_xent(z1, z2, 0.1)  # aligned views cost less


def test_accuracy_ignores_unknown_labels_and_is_nan_without_any() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 0, -1])).item() == 0.5
    assert torch.isnan(accuracy(logits, torch.tensor([-1, -1, -1])))
