"""DML: Distilled Meta-Learning without a clean set (DML paper, "Efficiently meta-learning for robust deep
networks without prior unbiased set": Eq. 1-8, Algorithms 1-2).

Meta Pseudo Labels (Pham et al. 2021) in which the labelled set is a small-loss subset 𝒮 of the noisy batch whose
per-class size R(c) is estimated from the student's feedback (`selection.py`). The feedback maths lives in
`lnl.hypergrad.feedback`, the losses in `lnl.losses`, the per-epoch selection diagnostics in `dml_diagnostics.py`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from lnl.errors import ConfigError
from lnl.hypergrad.distributed import all_reduce_grads, all_reduce_mean_dict, world_size
from lnl.hypergrad.feedback import (
    LookAhead,
    check_mode,
    check_sign,
    exact_feedback,
    first_order_feedback,
    lookahead_feedback,
    per_class_feedback,
)
from lnl.losses import kd_loss, per_sample_cross_entropy, smoothed_cross_entropy, uda_consistency
from lnl.methods.base import LNLModule
from lnl.methods.dml_diagnostics import SelectionDiagnostics
from lnl.methods.selection import SelectionConfig, SmallLossSelector


class DML(LNLModule):
    """Teacher T and student S trained by hand, one real step each per batch (DML Algorithm 1).

    Step: T on [x^w; x^s] (one pass) → pseudo labels ŷ from T(x^s) (`sample` with `step_generator`, or `argmax`)
    → S(x^s) (the real training forward) → scores, groups and selection 𝒮 → student step on
    (1−λ)·CE_ls(ŷ, S(x^s)) + λ·ξ²·KD(T(x^w), S(x^s)) + ν·(1−λ)·CE_ls(ỹ_𝒮, S(x^s_𝒮)) (Eq. 2-4; ν =
    `student_noisy_ce`) → feedback on x^w from a momentum-free look-ahead step on the pseudo-label term
    θ' = θ − η·∇CE_ls(ŷ, S(x^s)) (Eq. 4, 7; fp32, autocast off): per-sample s_i = ℓ_i(θ) − ℓ_i(θ') feed the
    selection's evidence bank, h = mean of s_i over 𝒮 (`first_order`) or η⟨∇L_𝒮(θ'), g_pl⟩ (`exact`) → teacher
    step on (h − b)·CE(ŷ, T(x^s)) + (1−λ)·CE_ls(ỹ_𝒮, T(x^w_𝒮)) + α·ramp(t)·UDA(𝒰), ramp(t) = min(1, t/ramp_steps),
    b the optional moving-average baseline of h (`h_baseline`, as in MPL).

    Decisions: the selection score is the per-sample CE w.r.t. ỹ of the student's training forward S(x^s)
    (`score_net: student`, free), of the teacher's weak view (`teacher`), or their sum (`both`: Eq. 2's L_sup).
    Groups are the noisy labels or the teacher's predicted classes (`group_by`, Eq. 8). η is the student's
    current learning rate. Under DDP every gradient is averaged by hand (DDP's reducer is idle), the 𝒮- and
    𝒰-terms are normalised by global counts, and the selection bank is all-gathered.
    """

    train_views: ClassVar[tuple[str, ...]] = ("weak", "strong")
    eval_nets: ClassVar[tuple[str, ...]] = ("student", "teacher")
    bench_variants: ClassVar[dict[str, dict]] = {
        "first_order": {"feedback": "first_order"},
        "exact": {"feedback": "exact"},
    }

    def __init__(
        self,
        num_classes: int,
        teacher_backbone: str | None = None,
        teacher_backbone_kwargs: dict[str, Any] | None = None,
        teacher_optimizer: OptimizerCallable = torch.optim.SGD,
        teacher_scheduler: LRSchedulerCallable | None = None,
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
        check_mode(feedback)
        check_sign(feedback_sign)
        for name, value, allowed in (("pseudo_label", pseudo_label, ("sample", "argmax")),
                                     ("score_net", score_net, ("student", "teacher", "both")),
                                     ("group_by", group_by, ("noisy_label", "teacher_pred")),
                                     ("kd_direction", kd_direction, ("teacher_student", "student_teacher"))):  # fmt: skip
            if value not in allowed:
                raise ConfigError(f"model.{name} = {value!r}: allowed values are {', '.join(allowed)}")
        if not 0.0 <= lam <= 1.0:
            raise ConfigError(f"model.lam = {lam}: must be in [0, 1]")
        if student_noisy_ce < 0:
            raise ConfigError(f"model.student_noisy_ce = {student_noisy_ce}: must be >= 0")
        if h_baseline is not None and not 0.0 <= h_baseline < 1.0:
            raise ConfigError(f"model.h_baseline = {h_baseline}: must be a momentum in [0, 1) or null")
        self.automatic_optimization = False
        same = teacher_backbone is None
        self.teacher = self.build_backbone(
            self.hparams.backbone if same else teacher_backbone,
            self.hparams.backbone_kwargs if same else teacher_backbone_kwargs,
        )
        self.teacher_optimizer_factory, self.teacher_scheduler_factory = teacher_optimizer, teacher_scheduler
        if isinstance(selection, dict):  # from a checkpoint's hparams
            selection = SelectionConfig(**selection)
        selection = selection or SelectionConfig()
        self.hparams["selection"] = asdict(selection)  # plain dict: checkpoints load with weights_only=True
        self.selector = SmallLossSelector(num_classes, **asdict(selection))
        self.diagnostics = SelectionDiagnostics(num_classes)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.register_buffer("h_mean", torch.zeros(()))  # moving average of h (the `h_baseline` b)

    # ---------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        super().setup(stage)
        size = getattr(getattr(self._trainer, "datamodule", None), "train_size", 0) if self._trainer else 0
        self.selector.preallocate(int(size or 0))  # without a data module (bench) the bank grows on demand

    def configure_optimizers(self) -> Any:
        return self.two_optimizers(
            self.teacher.parameters(), self.teacher_optimizer_factory, self.teacher_scheduler_factory
        )

    # ---------------------------------------------------------------- the step
    def _pseudo_labels(self, t_s: Tensor) -> Tensor:
        with torch.no_grad():
            if self.hparams.pseudo_label == "argmax":
                return t_s.argmax(-1)
            probs = t_s.detach().float().softmax(-1)
            return torch.multinomial(probs, 1, generator=self.step_generator(probs.device)).squeeze(1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        hp, nb = self.hparams, batch["noisy"]
        xw, xs, y, index = nb["x"]["weak"], nb["x"]["strong"], nb["y"], nb["index"]
        s_opt, t_opt = self.optimizers()
        n, ws, lam, reduce = y.shape[0], world_size(), hp.lam, self.all_reduce_mean
        t_w, t_s = self.teacher(torch.cat([xw, xs])).split(n)
        pseudo = self._pseudo_labels(t_s)
        s_logits = self.student(xs)
        nets = {"student": (s_logits,), "teacher": (t_w,), "both": (s_logits, t_w)}[hp.score_net]
        scores = sum(per_sample_cross_entropy(z.detach(), y) for z in nets)
        groups = y if hp.group_by == "noisy_label" else t_w.detach().argmax(-1)
        mask = self.selector.select(index, groups, scores, self.current_epoch)
        counts = reduce(torch.stack([mask.sum(), (~mask).sum()]).float()) * ws  # global |𝒮|, |𝒰|
        per_rank_sel = (counts[0] / ws).clamp_min(1e-12)  # a local sum over 𝒮 / this = its share of the mean

        # student: the pseudo-label term's gradient is kept apart for the look-ahead (Eq. 4)
        loss_pl = smoothed_cross_entropy(s_logits, pseudo, hp.label_smoothing)
        loss_rest = lam * kd_loss(
            s_logits, t_w.detach(), hp.kd_temperature, hp.kd_direction != "teacher_student"
        )
        if hp.student_noisy_ce > 0:
            sel_ce = smoothed_cross_entropy(s_logits[mask], y[mask], hp.label_smoothing, reduction="sum")
            loss_rest = loss_rest + hp.student_noisy_ce * (1 - lam) * sel_ce / per_rank_sel
        loss_s = (1 - lam) * loss_pl + loss_rest
        ok = self.check_finite("student loss", loss_s)
        params = dict(self.student.named_parameters())
        h = torch.zeros((), device=y.device)
        if ok:
            g_pl = torch.autograd.grad(loss_pl, list(params.values()), retain_graph=True, allow_unused=True)
            g_pl = all_reduce_mean_dict({k: torch.zeros_like(p) if g is None else g
                                         for (k, p), g in zip(params.items(), g_pl)})  # fmt: skip
            if lam > 0 or hp.student_noisy_ce > 0:
                self.manual_backward(loss_rest)
            for k, p in params.items():
                p.grad = (1 - lam) * g_pl[k] if p.grad is None else p.grad.add_(g_pl[k], alpha=1 - lam)
            all_reduce_grads(list(params.values()))  # g_pl is global already: averaging keeps it
            h, look = self._feedback(xw, y, mask, g_pl, self.current_lr(s_opt), per_rank_sel)
            self.optimizer_step_manual(s_opt)
            self._update_selection(index, groups, mask, look, h)
        s_opt.zero_grad(set_to_none=True)

        h_t = h - self.h_mean if hp.h_baseline is not None else h
        ramp = min(1.0, float(self.steps_done + 1) / max(hp.uda_ramp_steps, 1))
        loss_t = h_t.detach() * F.cross_entropy(t_s, pseudo)
        if bool(counts[0] > 0):
            sel_sum = smoothed_cross_entropy(t_w[mask], y[mask], hp.label_smoothing, reduction="sum")
            loss_t = loss_t + (1 - lam) * sel_sum / per_rank_sel
        uda, conf = uda_consistency(t_w[~mask], t_s[~mask], hp.uda_temperature, hp.uda_threshold)
        if counts[1] > 0:
            loss_t = loss_t + hp.alpha * ramp * uda * (~mask).sum() / (counts[1] / ws)
        if self.check_finite("teacher loss", loss_t):
            self.manual_backward(loss_t)
            all_reduce_grads(list(self.teacher.parameters()))
            self.optimizer_step_manual(t_opt)
        t_opt.zero_grad(set_to_none=True)
        if hp.h_baseline is not None:
            self.h_mean.mul_(hp.h_baseline).add_((1 - hp.h_baseline) * h.detach())
        self.steps_done += 1
        self.diagnostics.log_step(self, loss_s, loss_t, h, counts, mask, nb, groups, conf)

    def _feedback(
        self, xw: Tensor, y: Tensor, mask: Tensor, g_pl: dict[str, Tensor], eta: float, per_rank_sel: Tensor
    ) -> tuple[Tensor, LookAhead]:
        """(h, look-ahead) from the look-ahead θ' = θ − η·g_pl on x^w; h global (DML Eq. 7)."""
        hp = self.hparams
        exact = hp.feedback == "exact"
        look = lookahead_feedback(self.student, xw, y, g_pl, eta, graph_after=exact)
        if exact:
            virtual = look.params_after
            loss_sel = (look.after * mask.to(look.after.dtype)).sum() / per_rank_sel
            grads = torch.autograd.grad(loss_sel, list(virtual.values()), allow_unused=True)
            g_after = all_reduce_mean_dict(
                {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(virtual.items(), grads)}
            )
            h = exact_feedback(list(g_after.values()), list(g_pl.values()), eta, sign=hp.feedback_sign)
        else:
            reduce = self.all_reduce_mean
            h, _ = first_order_feedback(look.before, look.after, mask, sign=hp.feedback_sign, reduce=reduce)
        return h.detach(), look

    def _update_selection(
        self, index: Tensor, groups: Tensor, mask: Tensor, look: LookAhead, h: Tensor
    ) -> None:
        """Evidence bank (per-sample feedback over the batch's mean |s|); sign-drift rules: R(c) += δ·sign."""
        before, after = look.before, look.after.detach()
        s = before - after
        self.selector.update_evidence(index, s / self.all_reduce_mean(s.abs().mean()).clamp_min(1e-12))
        h_c, n_c = per_class_feedback(
            before, after, groups, self.num_classes, mask, reduce=self.all_reduce_mean
        )
        paper_h = h * check_sign(self.hparams.feedback_sign)
        self.selector.update_ratios(h_c, n_c, paper_h, self.current_epoch)

    # ---------------------------------------------------------------- diagnostics
    def on_train_epoch_start(self) -> None:
        self.diagnostics.reset()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.diagnostics.log_epoch(self)

    def on_fit_end(self) -> None:
        self.diagnostics.save_figure(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["dml_diagnostics"] = self.diagnostics.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.diagnostics.history = list(checkpoint.get("dml_diagnostics", []))
