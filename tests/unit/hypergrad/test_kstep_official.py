"""EMLC's k-step meta-gradient against the official formula, written independently (float64).

The official `meta.teacher_backward_ms` takes k student SGD steps, then JVPs u_j = J_{log S(x_j; θ_j)}·g_w at each
step's pre-step weights, discounts step j by (1 − η)^{k−1−j} and sets the teacher's meta loss to
η · mean over every row of the k steps of ⟨u, q⟩ (`meta_loss`: `eta * batch_dot_product.mean()` over the
concatenated rows). Here the JVP is the double-backward oracle, the steps are plain `torch.optim.SGD` steps, and
the batches have unequal sizes (a row mean, not a mean of per-step means).
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from helpers.nets import QNet, batch, mlp, rel_err
from helpers.oracles import logprob_jvp_double_backward
from lnl.hypergrad import Lookahead, StudentStep, snapshot_params
from lnl.hypergrad.estimators import JVPSoftTargets
from lnl.hypergrad.metagrad import clean_grad, kstep_surrogate
from lnl.losses import soft_cross_entropy

ETA = 0.1
SIZES = (6, 5, 3)


def _run_k_steps():
    """k real SGD steps of the student on q(α) of k batches; the snapshots, batches and g_w after the last step."""
    student, qnet = mlp(), QNet().double()
    opt = torch.optim.SGD(student.parameters(), lr=ETA)
    snaps, data = [], []
    for j, n in enumerate(SIZES):
        x, y = batch(20 + j, n)
        snaps.append(snapshot_params(student))
        data.append((x, y))
        soft_cross_entropy(student(x), qnet(x, y).detach()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    xc, yc = batch(7)
    _, g_w = clean_grad(student, dict(student.named_parameters()), None, xc, yc)
    return student, qnet, snaps, data, g_w, (xc, yc)


def _official_meta_grad(student, qnet, snaps, data, g_w) -> list[torch.Tensor]:
    """∇_α of η · mean_rows[(1 − η)^{k−1−j} ⟨u_j,i, q_j,i⟩] over the concatenated rows of the k steps."""
    k = len(snaps)
    rows = []
    for j, (x, y) in enumerate(data):
        u = logprob_jvp_double_backward(student, snaps[j], None, x, g_w)
        rows.append((u * (1 - ETA) ** (k - 1 - j) * qnet(x, y)).sum(1))
    meta_loss = ETA * torch.cat(rows).mean()
    return list(torch.autograd.grad(meta_loss, list(qnet.parameters())))


def test_kstep_mean_equals_the_official_meta_loss() -> None:
    student, qnet, snaps, data, g_w = _run_k_steps()[:5]
    expected = _official_meta_grad(student, qnet, snaps, data, g_w)
    xs, qs = [x for x, _ in data], [qnet(x, y) for x, y in data]
    steps = [Lookahead.constant(ETA, g_w)] * len(SIZES)
    sur, _ = kstep_surrogate(student, snaps, None, xs, qs, g_w, steps, "mean")
    got = torch.autograd.grad(sur, list(qnet.parameters()), retain_graph=True)
    assert rel_err(list(got), expected) < 1e-12
    sur_sum, _ = kstep_surrogate(student, snaps, None, xs, qs, g_w, steps, "sum")
    summed = torch.autograd.grad(sur_sum, list(qnet.parameters()))
    assert rel_err(list(summed), expected) > 0.5  # the old default: about k times the official step


@pytest.mark.parametrize("keep_graphs", [True, False])
def test_emlc_estimator_meta_gradient_equals_the_official_formula(keep_graphs) -> None:
    """The estimator EMLC calls, with kept target graphs or targets rebuilt one at a time (`kstep_targets`)."""
    student, qnet, snaps, data, g_w, clean = _run_k_steps()
    expected = _official_meta_grad(student, qnet, snaps, data, g_w)
    steps = []
    for j, (x, y) in enumerate(data):
        q = qnet(x, y) if keep_graphs else qnet(x, y).detach()
        step = Lookahead.constant(ETA, snaps[j])
        steps.append(StudentStep(torch.zeros(()), [], snaps[j], step, x, q, len(q), inputs=(x, y)))

    @contextmanager
    def rebuild(step: StudentStep):
        yield qnet(*step.inputs)

    meta = JVPSoftTargets().meta_gradient(student, steps, list(qnet.parameters()), clean, "mean", rebuild)
    assert rel_err(list(meta.grads), expected) < 1e-12
