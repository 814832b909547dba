"""Tests for lnl.hypergrad.feedback: first-order vs exact DML/MPL feedback h (float64 oracles)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lnl.errors import ConfigError
from lnl.hypergrad import Lookahead
from lnl.hypergrad.feedback import (
    check_mode,
    check_sign,
    exact_feedback,
    first_order_feedback,
    flat_dot,
    per_class_feedback,
)


def _problem(seed: int = 0, n: int = 48, d: int = 6, c: int = 4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    teacher_logits = 2.0 * torch.randn(n, c, generator=g, dtype=torch.float64)
    pseudo = torch.multinomial(teacher_logits.softmax(-1), 1, generator=g).squeeze(1)
    trusted = torch.arange(n) % 3 == 0  # 𝒮: a third of the batch
    # trusted labels: the teacher's labels on two thirds of 𝒮 ("clean"), random otherwise
    noisy = torch.where(torch.rand(n, generator=g) < 0.67, pseudo, torch.randint(0, c, (n,), generator=g))
    torch.manual_seed(seed)
    student = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, c)).double()
    return student, x, pseudo, noisy, trusted


def _exact(g_after, g_pseudo, lr: float, **kw) -> torch.Tensor:
    """`exact_feedback` on parameter lists, η = lr for every parameter."""
    names = [str(i) for i in range(len(g_after))]
    step = Lookahead.constant(lr, names)
    return exact_feedback(dict(zip(names, g_after)), dict(zip(names, g_pseudo)), step, **kw)


def _both_feedbacks(lr: float, seed: int = 0) -> tuple[float, float]:
    """One real plain-SGD student step on the pseudo-label term only; returns (h_first_order, h_exact)."""
    student, x, pseudo, noisy, trusted = _problem(seed)
    params = list(student.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=0.0)
    with torch.no_grad():
        before = F.cross_entropy(student(x), noisy, reduction="none")
    pseudo_loss = F.cross_entropy(student(x), pseudo, label_smoothing=0.1)
    g_pseudo = torch.autograd.grad(pseudo_loss, params)
    for p, gp in zip(params, g_pseudo):
        p.grad = gp.clone()
    opt.step()
    after = F.cross_entropy(student(x), noisy, reduction="none")
    g_after = torch.autograd.grad(after[trusted].mean(), params)
    h_fo, n = first_order_feedback(before, after, trusted)
    h_ex = _exact(g_after, g_pseudo, lr)
    assert n.item() == trusted.sum().item()
    return h_fo.item(), h_ex.item()


def test_first_order_and_exact_agree_with_shrinking_relative_difference():
    rel = {}
    for lr in (0.1, 0.01):
        h_fo, h_ex = _both_feedbacks(lr)
        assert h_fo > 0 and h_ex > 0  # the teacher's labels match most trusted labels: the step helps
        rel[lr] = abs(h_fo - h_ex) / abs(h_ex)
    assert rel[0.01] < 0.02
    # second-order term: relative difference ∝ η (ratio ≈ 10 for a 10x smaller learning rate)
    assert rel[0.01] < rel[0.1] / 5


def test_exact_feedback_matches_loss_directional_derivative():
    """h_exact / η = ⟨∇L_𝒮(θ'), g⟩ equals −d/dε L_𝒮(θ' − ε g)|₀ (central difference, float64)."""
    student, x, pseudo, noisy, trusted = _problem(1)
    params = list(student.parameters())
    g = torch.autograd.grad(F.cross_entropy(student(x), pseudo), params)
    after = F.cross_entropy(student(x), noisy, reduction="none")[trusted].mean()
    g_after = torch.autograd.grad(after, params)
    h = _exact(g_after, g, 1.0)
    eps = 1e-5

    def loss_at(step: float) -> float:
        with torch.no_grad():
            for p, gi in zip(params, g):
                p.sub_(step * gi)
            out = F.cross_entropy(student(x), noisy, reduction="none")[trusted].mean().item()
            for p, gi in zip(params, g):
                p.add_(step * gi)
        return out

    fd = (loss_at(-eps) - loss_at(eps)) / (2 * eps)
    assert h.item() == pytest.approx(fd, rel=1e-7)


def test_sign_conventions_and_validation():
    before, after = torch.tensor([2.0, 1.0, 3.0]), torch.tensor([1.0, 1.5, 1.0])
    h_paper, _ = first_order_feedback(before, after, sign="paper")
    h_mpl, _ = first_order_feedback(before, after, sign="mpl_code")
    assert h_paper.item() == pytest.approx((1.0 - 0.5 + 2.0) / 3)
    assert h_mpl.item() == pytest.approx(-h_paper.item())
    grads = [torch.ones(3)]
    assert _exact(grads, grads, 0.5, sign="mpl_code").item() == pytest.approx(-1.5)
    assert check_sign("paper") == 1.0 and check_mode("exact") == "exact"
    with pytest.raises(ConfigError, match="feedback_sign = 'mpl'"):
        check_sign("mpl")
    with pytest.raises(ConfigError, match="feedback = 'second'"):
        check_mode("second")


def test_empty_selection_gives_zero_and_count_zero():
    before, after = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 0.0])
    h, n = first_order_feedback(before, after, torch.zeros(2, dtype=torch.bool))
    assert h.item() == 0.0 and n.item() == 0.0
    h_c, n_c = per_class_feedback(before, after, torch.tensor([0, 1]), 3, torch.zeros(2, dtype=torch.bool))
    assert torch.equal(h_c, torch.zeros(3)) and torch.equal(n_c, torch.zeros(3))


def test_per_class_feedback_is_consistent_with_global():
    g = torch.Generator().manual_seed(3)
    before, after = torch.rand(40, generator=g), torch.rand(40, generator=g)
    labels = torch.randint(0, 5, (40,), generator=g)
    labels[labels == 4] = 3  # class 4 absent
    mask = torch.rand(40, generator=g) < 0.5
    h, n = first_order_feedback(before, after, mask)
    h_c, n_c = per_class_feedback(before, after, labels, 5, mask)
    assert n_c[4].item() == 0 and h_c[4].item() == 0.0
    assert n_c.sum().item() == n.item()
    assert (h_c * n_c).sum().item() / n.item() == pytest.approx(h.item(), rel=1e-6)
    for c in range(4):
        sel = mask & (labels == c)
        assert h_c[c].item() == pytest.approx((before[sel] - after[sel]).mean().item(), rel=1e-6)


def test_reduce_gives_global_feedback():
    """Two emulated ranks with uneven selected counts: reduced h equals the full-batch h (not a mean of means)."""
    g = torch.Generator().manual_seed(4)
    before, after = torch.rand(20, generator=g), torch.rand(20, generator=g)
    labels = torch.randint(0, 3, (20,), generator=g)
    mask = torch.rand(20, generator=g) < 0.6
    mask[:10] = mask[:10] & (torch.arange(10) < 2)  # rank 0 selects few
    full_h, full_n = first_order_feedback(before, after, mask)
    full_hc, _ = per_class_feedback(before, after, labels, 3, mask)
    seen = {}

    def capture(t):
        seen["stats"] = t.clone()
        return t

    first_order_feedback(before[10:], after[10:], mask[10:], reduce=capture)
    h0, n0 = first_order_feedback(
        before[:10], after[:10], mask[:10], reduce=lambda t: (t + seen["stats"]) / 2
    )
    assert h0.item() == pytest.approx(full_h.item(), rel=1e-6)
    assert n0.item() == pytest.approx(full_n.item() / 2)  # a mean-reduce: count is per-rank average, h global
    per_class_feedback(before[10:], after[10:], labels[10:], 3, mask[10:], reduce=capture)
    hc0, _ = per_class_feedback(
        before[:10], after[:10], labels[:10], 3, mask[:10], reduce=lambda t: t + seen["stats"]
    )
    assert torch.allclose(hc0, full_hc, rtol=1e-6)


def test_mean_reduce_with_fractional_counts():
    """A mean all-reduce turns one selected sample on two ranks into a count of 0.5: h must not be halved."""
    before, after = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 1.0])
    mask = torch.tensor([True, False])
    h, n = first_order_feedback(before, after, mask, reduce=lambda t: t / 2)  # other rank: nothing selected
    assert h.item() == pytest.approx(2.0) and n.item() == pytest.approx(0.5)
    h_c, n_c = per_class_feedback(before, after, torch.tensor([1, 0]), 2, mask, reduce=lambda t: t / 2)
    assert h_c.tolist() == pytest.approx([0.0, 2.0]) and n_c.tolist() == pytest.approx([0.0, 0.5])


def test_flat_dot_matches_sum_and_skips_none():
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g), torch.randn(2, generator=g)]
    ys = [torch.randn(3, 4, generator=g), None, torch.randn(2, generator=g)]
    ref = (xs[0] * ys[0]).sum() + (xs[2] * ys[2]).sum()
    assert flat_dot(xs, ys).item() == pytest.approx(ref.item(), rel=1e-6)
    assert flat_dot([None], [torch.ones(2)]).item() == 0.0
    bf = [x.to(torch.bfloat16) for x in xs[:1]]
    assert flat_dot(bf, bf).dtype == torch.float32
    with pytest.raises(ValueError, match=r"flat_dot: lists of different length \(3 vs 2\)"):
        flat_dot(xs, ys[:2])
