"""Each method's label evidence does its job: the scores' definitions, and DML's posterior against the truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.synthetic import sgd
from lnl.methods import CE, DML, EMLC, MLC
from lnl.methods.selection import SmallLossSelector
from lnl.report.estimates import auroc
from lnl.report.evidence import loss_based_evidence


def test_loss_based_score_is_one_minus_the_given_labels_probability() -> None:
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.1, 0.0]])
    given = torch.tensor([0, 0, 2])
    ev = loss_based_evidence(logits, given)
    p = F.softmax(logits, -1)
    assert torch.allclose(ev.issue_score, 1 - p[torch.arange(3), given])
    assert torch.allclose(ev.columns["student_loss"], F.cross_entropy(logits, given, reduction="none"))
    assert ev.corrected.tolist() == [0, 1, 1]  # kept where not flagged, argmax where flagged


def _bimodal_bank(n: int = 400, seed: int = 0) -> tuple[SmallLossSelector, np.ndarray]:
    """A loss bank of 2 groups: right labels ~ N(0.2, 0.1), wrong ones (30%) ~ N(2.0, 0.5)."""
    g = torch.Generator().manual_seed(seed)
    wrong = torch.rand(n, generator=g) < 0.3
    loss = torch.where(
        wrong, 2.0 + 0.5 * torch.randn(n, generator=g), 0.2 + 0.1 * torch.randn(n, generator=g)
    )
    selector = SmallLossSelector(2, num_samples=n, warmup_epochs=1, schedule_epochs=1)
    index, groups = torch.arange(n), torch.arange(n) % 2
    selector.update_evidence(
        index, torch.ones(n)
    )  # the `estimated` rule estimates from samples with evidence
    for epoch in range(3):
        selector.select(index, groups, loss.abs(), epoch)
    return selector, wrong.numpy()


def test_dml_posterior_and_selection_frequency_find_the_wrong_labels() -> None:
    selector, wrong = _bimodal_bank()
    posterior = selector.wrong_label_posterior().numpy()
    assert ((posterior >= 0) & (posterior <= 1)).all()
    assert auroc(posterior, wrong) > 0.99
    assert ((posterior > 0.5) == wrong).mean() > 0.97
    freq = selector.selection_frequency(torch.arange(len(wrong))).numpy()
    assert selector.times_seen.max() == 2  # counted after the 1-epoch warm-up only
    assert freq[~wrong].mean() > 0.8 and freq[wrong].mean() < 0.1


def test_dml_evidence_uses_the_bank_where_it_saw_the_sample() -> None:
    model = DML(num_classes=2, backbone="tiny_mlp", in_chans=4)
    model.selector = _bimodal_bank(40)[0]
    model.selector.bank_labels[6:8] = -1  # never seen: the student's score stands in
    model.begin_label_evidence()
    x, y, index = torch.randn(8, 4, 6, 6), torch.arange(8) % 2, torch.arange(8)
    with torch.no_grad():
        ev = model.label_evidence(x, y, index)
        plain = loss_based_evidence(model.student(x), y)
    assert torch.allclose(ev.issue_score[:6], model.selector.wrong_label_posterior()[:6])
    assert torch.allclose(ev.issue_score[6:], plain.issue_score[6:])
    assert set(ev.columns) == {"student_loss", "selection_frequency", "bank_score"}


def _mlc() -> MLC:
    return MLC(num_classes=3, backbone="tiny_mlp", in_chans=4)


@pytest.mark.parametrize("make", [lambda: EMLC(num_classes=3, backbone="tiny_mlp", in_chans=4,
                                                teacher_optimizer=sgd(0.1)), _mlc], ids=["emlc", "mlc"])  # fmt: skip
def test_label_correctors_score_one_minus_their_target_on_the_given_label(make) -> None:
    model = make().eval()
    x, y = torch.randn(5, 4, 6, 6), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        ev = model.label_evidence(x, y, torch.arange(5))
        if isinstance(model, EMLC):
            q, a = model.teacher.correct(*model.teacher.features_and_logits(x), y)
            assert torch.allclose(ev.columns["gate_weight"], torch.sigmoid(a))
        else:
            from lnl.models.backbones import features_and_logits

            q = model.meta_net(features_and_logits(model.student, x)[0], y)
    assert torch.allclose(ev.issue_score, 1 - q[torch.arange(5), y].float())
    assert torch.equal(ev.corrected, torch.where(ev.issue_score > 0.5, q.argmax(1), y))


def test_ce_uses_the_plain_loss_score() -> None:
    model = CE(num_classes=3, backbone="tiny_mlp", in_chans=4).eval()
    x, y = torch.randn(5, 4, 6, 6), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        ev, plain = model.label_evidence(x, y, torch.arange(5)), loss_based_evidence(model.student(x), y)
    assert torch.equal(ev.issue_score, plain.issue_score)
