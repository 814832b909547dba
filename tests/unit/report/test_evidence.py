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
from lnl.report.evidence import loss_based_evidence, selection_evidence, trajectory_evidence


def test_loss_based_score_is_one_minus_the_given_labels_probability() -> None:
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.1, 0.0]])
    given = torch.tensor([0, 0, 2])
    ev = loss_based_evidence(logits, given)
    p = F.softmax(logits.double(), -1)
    assert torch.allclose(ev.issue_score, 1 - p[torch.arange(3), given])
    loss = F.cross_entropy(logits.double(), given, reduction="none")
    assert torch.allclose(ev.columns["student_loss"], loss)
    assert ev.candidate.tolist() == [0, 1, 1]  # the student's label, whatever the score


def test_loss_based_score_keeps_ranks_where_float32_saturates() -> None:
    """Logit gaps of 20-40: p(ỹ | x) is 1.0 in float32 for all three, their scores still differ (no ties)."""
    logits = torch.tensor([[20.0, 0.0], [30.0, 0.0], [40.0, 0.0]])
    score = loss_based_evidence(logits, torch.zeros(3, dtype=torch.long)).issue_score
    assert (F.softmax(logits, -1)[:, 0] == 1.0).all()
    assert score[0] > score[1] > score[2] > 0


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


def test_dml_bank_and_selection_frequency_find_the_wrong_labels() -> None:
    selector, wrong = _bimodal_bank()
    assert auroc(selector.bank.numpy(), wrong) > 0.99
    freq = selector.selection_frequency(torch.arange(len(wrong))).numpy()
    assert selector.times_seen.max() == 2  # counted after the 1-epoch warm-up only
    assert freq[~wrong].mean() > 0.8 and freq[wrong].mean() < 0.1


def test_dml_score_pools_the_student_and_the_bank_where_it_saw_the_sample() -> None:
    """1 − √(p_S(ỹ | x)·exp(−b)) from the bank score b and the student's loss; the student's score where unseen."""
    model = DML(num_classes=2, backbone="tiny_mlp", in_chans=4)
    model.selector = _bimodal_bank(40)[0]
    model.selector.bank_labels[6:8] = -1  # never seen: the student's score stands in
    x, y, index = torch.randn(8, 4, 6, 6), torch.arange(8) % 2, torch.arange(8)
    with torch.no_grad():
        ev = model.label_evidence(x, y, index)
        plain = loss_based_evidence(model.student(x), y)
    p_student = F.softmax(model.student(x).double(), -1)[torch.arange(8), y].detach()
    expected = 1 - torch.sqrt(p_student[:6] * torch.exp(-model.selector.bank[:6].double()))
    assert torch.allclose(ev.issue_score[:6], expected)
    assert torch.allclose(ev.issue_score[6:], plain.issue_score[6:])
    assert ev.columns["bank_score"][6:].isnan().all()
    assert set(ev.columns) == {"student_loss", "selection_frequency", "bank_score"}


def test_dml_pooled_score_ranks_by_both_networks() -> None:
    """A wrong label the student alone misses (the bank remembers it) and one the bank alone misses both rank
    above a label both networks fit."""
    logits = torch.tensor([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])  # the student fits rows 0, 2; not row 1
    bank = torch.tensor([3.0, 0.05, 0.05])  # the bank remembers a high loss for row 0 only
    score = selection_evidence(logits, torch.zeros(3, dtype=torch.long), bank, {}).issue_score
    assert score[0] > score[2] and score[1] > score[2]


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
    assert torch.equal(ev.candidate, q.argmax(1))


def test_ce_uses_the_plain_loss_score() -> None:
    model = CE(num_classes=3, backbone="tiny_mlp", in_chans=4).eval()
    x, y = torch.randn(5, 4, 6, 6), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        ev, plain = model.label_evidence(x, y, torch.arange(5)), loss_based_evidence(model.student(x), y)
    assert torch.equal(ev.issue_score, plain.issue_score)


def test_ce_scores_its_confidence_over_training() -> None:
    """CE's score is 1 − √(p(ỹ | x)·μ), μ the mean of p_t(ỹ | x) over its training steps (the final model's score
    where never trained on): a label fitted only at the end ranks above one fitted all along."""
    model = CE(num_classes=2, backbone="tiny_mlp", in_chans=4)
    given = torch.zeros(3, dtype=torch.long)
    early = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [3.0, 0.0]])  # row 1 is not fitted early on
    late = torch.tensor([[3.0, 0.0], [3.0, 0.0], [3.0, 0.0]])  # ... then memorized
    for logits in (early, early, late):
        model.confidence.update(torch.arange(2), logits[:2], given[:2])
    mu = model.confidence.mean(torch.arange(3))
    p = F.softmax(torch.tensor([3.0, 0.0]).double(), -1)[0]
    assert torch.allclose(mu[:2], torch.stack([p, (2 * (1 - p) + p) / 3]))
    ev = trajectory_evidence(late, given, mu)
    assert ev.issue_score[1] > ev.issue_score[0]
    p_now = F.softmax(late.double(), -1)[:2, 0]
    assert torch.allclose(ev.issue_score[:2], 1 - torch.sqrt(p_now * mu[:2]))
    assert torch.allclose(ev.issue_score[2], loss_based_evidence(late, given).issue_score[2])
    state = model.state_dict()
    fresh = CE(num_classes=2, backbone="tiny_mlp", in_chans=4)
    fresh.load_state_dict(state)  # checkpointed
    assert torch.equal(fresh.confidence.mean(torch.arange(3)).nan_to_num(), mu.nan_to_num())
    del state["confidence.visits"], state["confidence.confidence_sum"]
    fresh.load_state_dict(state)  # a checkpoint from before the record: empty, the plain score stands in
    assert fresh.confidence.mean(torch.arange(2)).isnan().all()
