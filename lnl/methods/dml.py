"""DML ("Efficiently meta-learning for robust deep networks without prior unbiased set": Eq. 1-8, Algorithms 1-2):
Meta Pseudo Labels (Pham et al. 2021) whose labelled set is a small-loss subset 𝒮 of the noisy batch, R(c) estimated
from the data (`selection.py`); feedback in `lnl.hypergrad.feedback`, losses in `lnl.losses`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lnl.data.batch import Batch
from lnl.errors import ConfigError
from lnl.hypergrad import create_feedback, lookahead_feedback
from lnl.hypergrad.distributed import all_reduce_mean_dict, world_size
from lnl.hypergrad.feedback import check_sign
from lnl.losses import (
    kd_loss,
    masked_sum,
    per_sample_cross_entropy,
    pseudo_labels,
    smoothed_cross_entropy,
    uda_consistency,
)
from lnl.methods.base import data_train_size
from lnl.methods.bilevel import TeacherStudent, check_choice
from lnl.methods.dml_diagnostics import SelectionDiagnostics
from lnl.methods.selection import SelectionConfig, SmallLossSelector
from lnl.report.evidence import LabelEvidence, selection_evidence


class DML(TeacherStudent):
    """Teacher T and student S trained by hand, one real step each per batch (DML Algorithm 1).

    Step: T on [x^w; x^s] (one pass) → pseudo labels ŷ ~ T(x^s) (`sample`, step-seeded; or `argmax`) → S(x^s) →
    scores, groups and 𝒮 → student step on (1−λ)·CE_ls(ŷ, S(x^s)) + λ·ξ²·KD(T(x^w), S(x^s)) + ν·(1−λ)·CE_ls(ỹ_𝒮,
    S(x^s_𝒮)) (Eq. 2-4, ν = `student_noisy_ce`) → feedback from a momentum-free look-ahead on the pseudo-label
    term θ' = θ − η·∇CE_ls(ŷ, S(x^s)) on x^w (Eq. 4, 7; fp32): s_i = ℓ_i(θ) − ℓ_i(θ') feed the evidence bank,
    h = mean of s_i over 𝒮 (`first_order`) or η⟨∇L_𝒮(θ'), g_pl⟩ (`exact`) → teacher step on
    (h − b)·CE(ŷ, T(x^s)) + (1−λ)·CE_ls(ỹ_𝒮, T(x^w_𝒮)) + α·ramp(t)·UDA(𝒰), b the moving average of h
    (`h_baseline`, MPL's baseline) or 0, ramp(t) = min(1, t/uda_ramp_steps).

    The selection score is the per-sample CE w.r.t. ỹ of S(x^s) (`score_net: student`), of T(x^w) (`teacher`) or
    both (Eq. 2's L_sup); groups are ỹ or argmax T(x^w) (`group_by`, Eq. 8). Under DDP every gradient is averaged
    by hand, the 𝒮- and 𝒰-terms are normalised by global counts, and the selection bank is all-gathered.
    """

    train_views: ClassVar[tuple[str, ...]] = ("weak", "strong")
    eval_nets: ClassVar[tuple[str, ...]] = ("student", "teacher")
    bench_variants: ClassVar[dict[str, dict]] = {"first_order": {"feedback": "first_order"},
                                                 "exact": {"feedback": "exact"}}  # fmt: skip

    def __init__(
        self,
        num_classes: int,
        feedback: Literal["first_order", "exact"] = "first_order",
        feedback_sign: Literal["paper", "mpl_code"] = "paper",
        h_baseline: float | None = None,
        pseudo_label: Literal["sample", "argmax"] = "sample",
        lam: float = 0.5,
        alpha: float = 8.0,
        kd_temperature: float = 0.7,
        kd_direction: Literal["teacher_student", "student_teacher"] = "teacher_student",
        student_noisy_ce: float = 0.0,
        label_smoothing: float = 0.1,
        uda_temperature: float = 0.7,
        uda_threshold: float = 0.6,
        uda_ramp_steps: int = 5000,
        score_net: Literal["student", "teacher", "both"] = "student",
        group_by: Literal["noisy_label", "teacher_pred"] = "noisy_label",
        selection: SelectionConfig | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        self.feedback, _ = create_feedback(feedback), check_sign(feedback_sign)
        check_choice("pseudo_label", pseudo_label, ("sample", "argmax"))
        check_choice("score_net", score_net, ("student", "teacher", "both"))
        check_choice("group_by", group_by, ("noisy_label", "teacher_pred"))
        check_choice("kd_direction", kd_direction, ("teacher_student", "student_teacher"))
        for name, value, ok in (("lam", lam, 0 <= lam <= 1), ("student_noisy_ce", student_noisy_ce, student_noisy_ce >= 0),
                                ("h_baseline", h_baseline, h_baseline is None or 0 <= h_baseline < 1)):  # fmt: skip
            if not ok:
                raise ConfigError(
                    f"model.{name} = {value}: lam in [0, 1], student_noisy_ce >= 0, h_baseline in [0, 1)"
                )
        self.hparams["selection"] = asdict(SelectionConfig.coerce(selection))  # a dict: weights_only loading
        self.selector = SmallLossSelector(num_classes, **self.hparams["selection"])
        self.diagnostics = SelectionDiagnostics(num_classes)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.register_buffer("h_mean", torch.zeros(()))  # moving average of h (the `h_baseline` b)
        self._steps_host: int | None = (
            None  # `steps_done` on the host: read once per fit or load, no sync per step
        )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.selector.preallocate(
            data_train_size(self)
        )  # without a data module (bench) the bank grows on demand

    def train_step(self, batch: Batch, batch_idx: int) -> None:
        hp, nb = self.hparams, batch.noisy
        xw, xs, y, index = nb.views.weak, nb.views.strong, nb.y, nb.index
        s_opt, t_opt = self.optimizers()
        n, ws, lam, reduce = y.shape[0], world_size(), hp.lam, self.all_reduce_mean
        t_w, t_s = self.teacher(torch.cat([xw, xs])).split(n)
        if not self.check_finite("teacher logits", t_s):  # before sampling pseudo-labels from them
            return
        gen = self.step_generator(t_s.device) if hp.pseudo_label == "sample" else None
        pseudo = pseudo_labels(t_s, gen)
        s_logits = self.student(xs)
        nets = {"student": (s_logits,), "teacher": (t_w,), "both": (s_logits, t_w)}[hp.score_net]
        scores = sum(per_sample_cross_entropy(z.detach(), y) for z in nets)
        groups = y if hp.group_by == "noisy_label" else t_w.detach().argmax(-1)
        mask = self.selector.select(index, groups, scores, self.current_epoch)
        counts = reduce(torch.stack([mask.sum(), (~mask).sum()]).float()) * ws  # global |𝒮|, |𝒰|
        per_rank = (counts / ws).clamp_min(1e-12)  # a local sum over 𝒮 (𝒰) / this = its share of the mean

        # student (Eq. 2-4): the pseudo-label term's gradient g_pl is kept apart for the look-ahead
        loss_pl = smoothed_cross_entropy(s_logits, pseudo, hp.label_smoothing)
        loss_rest = lam * kd_loss(
            s_logits, t_w.detach(), hp.kd_temperature, hp.kd_direction != "teacher_student"
        )
        if hp.student_noisy_ce > 0:
            sel_ce = masked_sum(
                smoothed_cross_entropy(s_logits, y, hp.label_smoothing, reduction="none"), mask
            )
            loss_rest = loss_rest + hp.student_noisy_ce * (1 - lam) * sel_ce / per_rank[0]
        s_params = dict(self.student.named_parameters())
        h = torch.zeros((), device=y.device)
        if self.check_finite("student loss", (1 - lam) * loss_pl + loss_rest):
            g_pl = all_reduce_mean_dict(self.grads_of(loss_pl, s_params, retain_graph=True))
            rest = self.grads_of(loss_rest, s_params) if lam > 0 or hp.student_noisy_ce > 0 else None
            step = self.lookahead(s_opt, "sgd")  # momentum-free (Eq. 4)
            look = lookahead_feedback(self.student, xw, y, g_pl, step, graph_after=self.feedback.graph_after)
            h = self.feedback(look, mask, g_pl, step, per_rank[0], hp.feedback_sign, reduce)
            grads = [(1 - lam) * g_pl[k] + (0 if rest is None else rest[k]) for k in s_params]
            if self.apply_grads(s_opt, list(s_params.values()), grads, "student gradient"):
                signed_h = h * check_sign(hp.feedback_sign)
                self.selector.record_feedback(index, groups, mask, look.before, look.after.detach(), signed_h,
                                              self.current_epoch, reduce)  # fmt: skip

        # teacher: h-weighted pseudo-label term, supervised term on 𝒮, UDA on 𝒰
        h_t = h - self.h_mean if hp.h_baseline is not None else h
        if self._steps_host is None:
            self._steps_host = int(self.steps_done)
        ramp = min(1.0, float(self._steps_host + 1) / max(hp.uda_ramp_steps, 1))
        ce_t = smoothed_cross_entropy(t_w, y, hp.label_smoothing, reduction="none")
        sel_t = masked_sum(ce_t, mask) / per_rank[0]  # masked sums: boolean indexing would sync with the host
        n_unsel = (~mask).sum()
        uda, conf = uda_consistency(t_w, t_s, hp.uda_temperature, hp.uda_threshold, keep=~mask)
        loss_t = h_t.detach() * F.cross_entropy(t_s, pseudo) + (1 - lam) * sel_t
        loss_t = loss_t + hp.alpha * ramp * uda * n_unsel / per_rank[1]
        conf_rate = conf.sum() / n_unsel.clamp_min(1)  # share of confident samples in 𝒰 (0 when 𝒰 is empty)
        if self.check_finite("teacher loss", loss_t):
            t_params = list(self.teacher.parameters())
            grads_t = torch.autograd.grad(loss_t, t_params, allow_unused=True)
            self.apply_grads(t_opt, t_params, grads_t, "teacher gradient")
        if hp.h_baseline is not None:
            self.h_mean.mul_(hp.h_baseline).add_((1 - hp.h_baseline) * h)
        self.steps_done += 1
        self._steps_host += 1
        self.diagnostics.log_step(self, (1 - lam) * loss_pl.detach() + loss_rest.detach(), loss_t, h, counts,
                                  mask, nb, groups, conf_rate)  # fmt: skip

    def on_train_start(self) -> None:
        super().on_train_start()
        self._steps_host = None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._steps_host = None

    def label_evidence(self, x: Tensor, y: Tensor, index: Tensor) -> LabelEvidence:
        """The student's and the loss bank's view of each label (`selection_evidence`); columns: selection
        frequency, bank score (NaN where the bank never saw the sample)."""
        sel = self.selector
        bank = torch.where(sel.bank_labels[index] >= 0, sel.bank[index], torch.nan)
        columns = {"selection_frequency": sel.selection_frequency(index), "bank_score": bank}
        return selection_evidence(self.student(x), y, bank, columns)
