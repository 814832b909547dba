"""The DML / Meta Pseudo Labels feedback h (DML paper Eq. 4, 6-7 and Appendix A, Eq. 19; Pham et al. 2021, MPL).

The teacher's meta-gradient in DML (and MPL) is h·∇_T CE(ŷ, T(x)), where the student's feedback h measures how
much one SGD step on the teacher's pseudo labels ŷ lowers its loss L_𝒮 on trusted samples 𝒮. Eq. 4's step is a
plain SGD step on the pseudo-label term alone, θ' = θ − η·g_pl with g_pl = ∇_θ CE(ŷ, S(x; θ)); DML evaluates it as
a momentum-free *look-ahead* (`lookahead_feedback`), whatever optimizer takes the real step, so that h measures the
pseudo labels and not a momentum buffer, weight decay or the distillation term:

- first order: h = L_𝒮(θ) − L_𝒮(θ'), the mean over 𝒮 of the per-sample terms s_i = ℓ_i(θ) − ℓ_i(θ');
- exact:       h = η·⟨∇L_𝒮(θ'), g_pl⟩ (Eq. 7 scaled by the student's learning rate η).

The two agree to first order in η: L(θ) − L(θ') = η⟨∇L(θ'), g⟩ + η²/2·gᵀH g + O(η³), so their relative
difference shrinks linearly with η. Both are computed in float32 or wider with autocast off: under bf16 a difference
of two losses is rounding noise at small η.

Sign convention: `paper` (h > 0 when the step helped, the teacher's pseudo-label term is then *minimised* with
weight h); `mpl_code` is the opposite sign used by the MPL reference code (its `dot_product = new − old`).

Under DDP pass `reduce=` an all-reduce (mean or sum across ranks): sums and counts are reduced together, so
h is the global value, identical on every rank. All functions are method-agnostic and reusable by any
teacher-student method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lnl.hypergrad.distributed import all_reduce_mean_dict
from lnl.hypergrad.functional import ParamDict, functional_forward, named_params
from lnl.hypergrad.lookahead import Lookahead
from lnl.numerics import wide
from lnl.validation import one_of

FeedbackSign = Literal["paper", "mpl_code"]
FEEDBACK_SIGNS: tuple[str, ...] = ("paper", "mpl_code")
FeedbackMode = Literal["first_order", "exact"]
FEEDBACK_MODES: tuple[str, ...] = ("first_order", "exact")

Reduce = Callable[[Tensor], Tensor]


def check_sign(sign: str) -> float:
    """+1.0 for `paper`, −1.0 for `mpl_code`; ConfigError otherwise."""
    one_of("feedback_sign", sign, FEEDBACK_SIGNS)
    return 1.0 if sign == "paper" else -1.0


def check_mode(mode: str) -> str:
    """Validate a feedback mode name (`first_order` | `exact`)."""
    return one_of("feedback", mode, FEEDBACK_MODES)


def _masked(loss_before: Tensor, loss_after: Tensor, mask: Tensor | None) -> Tensor:
    if loss_before.shape != loss_after.shape or loss_before.dim() != 1:
        raise ValueError(
            f"per-sample losses must be 1-d of equal shape, got {loss_before.shape}, {loss_after.shape}"
        )
    diff = (loss_before.detach() - loss_after.detach()).to(
        torch.promote_types(loss_before.dtype, torch.float32)
    )
    return diff if mask is None else diff * mask.to(diff.dtype)


def first_order_feedback(
    loss_before: Tensor,
    loss_after: Tensor,
    mask: Tensor | None = None,
    *,
    sign: str = "paper",
    reduce: Reduce | None = None,
) -> tuple[Tensor, Tensor]:
    """First-order feedback h = L_𝒮(θ) − L_𝒮(θ') (DML Eq. 7, first order) from per-sample losses [B] before/after the step.

    `mask` (bool [B]) selects 𝒮 (all samples when None). Returns (h, n): the signed scalar h (0 when 𝒮 is empty
    everywhere) and the number of samples it averages over (global under `reduce`).
    """
    s = check_sign(sign)
    diff = _masked(loss_before, loss_after, mask)
    n = diff.new_tensor(float(diff.numel())) if mask is None else mask.to(diff.dtype).sum()
    stats = torch.stack([diff.sum(), n])
    if reduce is not None:
        stats = reduce(stats)
    total, count = stats[0], stats[1]
    h = torch.where(
        count > 0, total / torch.where(count > 0, count, torch.ones_like(count)), torch.zeros_like(total)
    )
    return s * h, count


def per_class_feedback(
    loss_before: Tensor,
    loss_after: Tensor,
    labels: Tensor,
    num_classes: int,
    mask: Tensor | None = None,
    *,
    sign: str = "paper",
    reduce: Reduce | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-class first-order feedback h(c) = mean over 𝒮 ∩ {ỹ = c} of ℓ_i(θ) − ℓ_i(θ') (DML Eq. 8, per class).

    Free from the same two forwards as `first_order_feedback`. Returns (h_c [C], n_c [C]); h_c = 0 where n_c = 0.
    """
    s = check_sign(sign)
    diff = _masked(loss_before, loss_after, mask)
    w = torch.ones_like(diff) if mask is None else mask.to(diff.dtype)
    stats = torch.zeros(2, num_classes, dtype=diff.dtype, device=diff.device)
    stats[0].index_add_(0, labels, diff)
    stats[1].index_add_(0, labels, w)
    if reduce is not None:
        stats = reduce(stats)
    h_c = torch.where(
        stats[1] > 0,
        stats[0] / torch.where(stats[1] > 0, stats[1], torch.ones_like(stats[1])),
        torch.zeros_like(stats[0]),
    )
    return s * h_c, stats[1]


def flat_dot(xs: Sequence[Tensor | None], ys: Sequence[Tensor | None]) -> Tensor:
    """⟨x, y⟩ of two parameter-shaped tensor lists as one fused dot product of their flattened concatenations.

    Pairs where either entry is None (a parameter without gradient) contribute 0. Accumulates in at least float32.
    """
    if len(xs) != len(ys):
        raise ValueError(f"flat_dot: lists of different length ({len(xs)} vs {len(ys)})")
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    if not pairs:
        ref = next((t for t in (*xs, *ys) if t is not None), None)
        return torch.zeros((), device=None if ref is None else ref.device)
    dtype = torch.promote_types(torch.promote_types(pairs[0][0].dtype, pairs[0][1].dtype), torch.float32)
    fx = torch.cat([x.reshape(-1).to(dtype) for x, _ in pairs])
    fy = torch.cat([y.reshape(-1).to(dtype) for _, y in pairs])
    return torch.dot(fx, fy)


def exact_feedback(
    grads_after: Mapping[str, Tensor | None],
    grads_pseudo: Mapping[str, Tensor | None],
    lookahead: Lookahead,
    *,
    sign: str = "paper",
) -> Tensor:
    """Exact feedback h = ⟨∇L_𝒮(θ'), η ⊙ ∇L_pseudo(θ)⟩ (DML Eq. 7 / Algorithm 2 line 9, times η).

    `grads_after` is the gradient of the trusted loss at the updated student θ', `grads_pseudo` the gradient of
    the pseudo-label term at θ that drove the step (by parameter name), η the look-ahead's. Under DDP both must
    already be global (averaged) gradients.
    """
    pseudo = lookahead.scale({n: grads_pseudo[n] for n in grads_after if grads_pseudo[n] is not None})
    return check_sign(sign) * flat_dot(list(grads_after.values()), [pseudo.get(n) for n in grads_after])


class LookaheadLosses(NamedTuple):
    """What `lookahead_feedback` measured: per-sample losses at θ and at θ', and θ' itself."""

    before: Tensor
    after: Tensor
    params_after: ParamDict


def lookahead_feedback(
    module: nn.Module,
    x: Tensor,
    labels: Tensor,
    direction: dict[str, Tensor],
    lookahead: Lookahead,
    *,
    graph_after: bool = False,
) -> LookaheadLosses:
    """Per-sample losses before and after the look-ahead step θ' = lookahead.step(θ, g) (DML Eq. 4 and 7).

    `direction` maps parameter names to g (the pseudo-label gradient g_pl, global under DDP); DML's `lookahead` is
    a momentum-free plain SGD step (rule `sgd`). Both forwards are functional (cloned buffers, the module's BN
    mode) and run with autocast off in float32 or wider, so
    s_i = before_i − after_i is the per-sample feedback of Eq. 7 to first order in η. With `graph_after` the
    after-losses keep their graph to the leaves θ' (for the exact h).
    """
    params = named_params(module)
    x = wide(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        with torch.no_grad():
            before = F.cross_entropy(
                wide(functional_forward(module, params, None, x)), labels, reduction="none"
            )
            moved = lookahead.step({n: params[n].detach() for n in direction if n in params}, direction)
            virtual = {n: moved[n].to(p.dtype) if n in moved else p.detach() for n, p in params.items()}
        for p in virtual.values():
            p.requires_grad_(graph_after)
        with torch.set_grad_enabled(graph_after):
            after = F.cross_entropy(
                wide(functional_forward(module, virtual, None, x)), labels, reduction="none"
            )
    return LookaheadLosses(before, after, virtual)


class Feedback:
    """A feedback estimator of DML's h from the look-ahead (Eq. 7), picked by name (`feedback`)."""

    name: str = ""
    graph_after: bool = False  # whether the look-ahead keeps the after-losses' graph

    def __call__(
        self, look: LookaheadLosses, mask: Tensor, g_pl: Mapping[str, Tensor], lookahead: Lookahead,
        per_rank_count: Tensor, sign: str, reduce: Reduce | None,
    ) -> Tensor:  # fmt: skip
        raise NotImplementedError


class FirstOrderFeedback(Feedback):
    """h = mean over 𝒮 of ℓ_i(θ) − ℓ_i(θ'): two forwards, global under `reduce`."""

    name = "first_order"

    def __call__(self, look, mask, g_pl, lookahead, per_rank_count, sign, reduce):  # noqa: ANN001
        return first_order_feedback(look.before, look.after, mask, sign=sign, reduce=reduce)[0].detach()


class ExactFeedback(Feedback):
    """h = η⟨∇L_𝒮(θ'), g_pl⟩ with ∇L_𝒮(θ') the global mean gradient over 𝒮 (one more backward)."""

    name = "exact"
    graph_after = True

    def __call__(self, look, mask, g_pl, lookahead, per_rank_count, sign, reduce):  # noqa: ANN001
        virtual = look.params_after
        loss = (look.after * mask.to(look.after.dtype)).sum() / per_rank_count
        grads = torch.autograd.grad(loss, list(virtual.values()), allow_unused=True)
        g_after = all_reduce_mean_dict(
            {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(virtual.items(), grads)}
        )
        return exact_feedback(g_after, g_pl, lookahead, sign=sign).detach()


FEEDBACKS: dict[str, type[Feedback]] = {c.name: c for c in (FirstOrderFeedback, ExactFeedback)}


def create_feedback(name: str) -> Feedback:
    """The feedback estimator called `name`; a one-line ConfigError otherwise."""
    check_mode(name)
    return FEEDBACKS[name]()
