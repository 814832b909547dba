"""DML: Distilled Meta-Learning without a clean set (DESIGN 4.4; DML paper Algorithms 1-2).

Meta Pseudo Labels in which the labelled set is a small-loss subset 𝒮 of the noisy batch (`selection.py`); the
feedback maths lives in `lnl.hypergrad.feedback`, the losses in `lnl.losses`. Decisions where paper and design are
silent are documented on the class.
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
    check_mode,
    check_sign,
    exact_feedback,
    first_order_feedback,
    per_class_feedback,
)
from lnl.hypergrad.functional import functional_forward, named_params
from lnl.losses import kd_loss, per_sample_cross_entropy, smoothed_cross_entropy, uda_consistency
from lnl.methods.base import LNLModule, has_true_labels
from lnl.methods.selection import SelectionConfig, SmallLossSelector, selection_counts


class DML(LNLModule):
    """Teacher T and student S trained by hand, one real step each per batch (DESIGN 4.4).

    Step: T on [x^w; x^s] (one pass) → pseudo labels ŷ from T(x^s) (`sample` with `step_generator`, or `argmax`)
    → S(x^s) (the real training forward) → scores and selection 𝒮 → student step on
    (1−λ)·CE_ls(ŷ, S(x^s)) + λ·ξ²·KL(sg T(x^w) ‖ S(x^s)) → feedback h on (x^w_𝒮, ỹ_𝒮) → teacher step on
    h·CE(ŷ, T(x^s)) + (1−λ)·CE_ls(ỹ_𝒮, T(x^w_𝒮)) + α·ramp(t)·UDA(𝒰), ramp(t) = min(1, t / uda_ramp_steps).

    Decisions: the selection score is the per-sample CE w.r.t. ỹ of the student's training forward S(x^s)
    (`score_net: student`, free), of the teacher's weak view (`teacher`), or their sum (`both`: the paper's
    L_sup of Eq. 2, the criterion of Algorithm 2 line 6). Both feedback forwards are functional
    passes on x^w_𝒮 in train-mode BN with cloned buffers. `exact` uses the gradient of the whole student loss that
    drove the real step (the paper's "gradient from the knowledge distillation loss", Eq. 6; equal to ∇CE_ls(ŷ)
    for λ = 0), at the student's current learning rate, before clipping. R(c) always follows the `paper`-signed
    per-class feedback; `feedback_sign` only flips h in the teacher's loss. Under DDP DML averages every gradient
    itself (DDP's reducer is switched off in each step, so find_unused_parameters stays False), normalises the
    𝒮- and 𝒰-terms by global counts, and broadcasts BN buffers from rank 0 before validation.
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
        pseudo_label: Literal["sample", "argmax"] = "sample",
        lam: float = 0.5,
        alpha: float = 8.0,
        kd_temperature: float = 0.7,
        label_smoothing: float = 0.1,
        uda_temperature: float = 0.7,
        uda_threshold: float = 0.6,
        uda_ramp_steps: int = 5000,
        score_net: Literal["student", "teacher", "both"] = "student",
        selection: SelectionConfig | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        check_mode(feedback)
        check_sign(feedback_sign)
        for name, value, allowed in (("pseudo_label", pseudo_label, ("sample", "argmax")),
                                     ("score_net", score_net, ("student", "teacher", "both"))):  # fmt: skip
            if value not in allowed:
                raise ConfigError(f"model.{name} = {value!r}: allowed values are {', '.join(allowed)}")
        if not 0.0 <= lam <= 1.0:
            raise ConfigError(f"model.lam = {lam}: must be in [0, 1]")
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
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

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
    def _ce_w(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-sample CE of a functional student pass (live params, cloned buffers, current BN mode)."""
        return per_sample_cross_entropy(
            functional_forward(self.student, named_params(self.student), None, x), y
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        hp, nb = self.hparams, batch["noisy"]
        xw, xs, y, index = nb["x"]["weak"], nb["x"]["strong"], nb["y"], nb["index"]
        s_opt, t_opt = self.optimizers()
        n, ws, lam = y.shape[0], world_size(), hp.lam
        reduce = self.all_reduce_mean
        t_w, t_s = self.teacher(torch.cat([xw, xs])).split(n)
        with torch.no_grad():
            if hp.pseudo_label == "sample":
                probs = t_s.detach().float().softmax(-1)
                pseudo = torch.multinomial(probs, 1, generator=self.step_generator(probs.device)).squeeze(1)
            else:
                pseudo = t_s.detach().argmax(-1)
        s_logits = self.student(xs)
        nets = {"student": (s_logits,), "teacher": (t_w,), "both": (s_logits, t_w)}[hp.score_net]
        scores = sum(per_sample_cross_entropy(z.detach(), y) for z in nets)
        mask = self.selector.select(index, y, scores, self.current_epoch)
        counts = reduce(torch.stack([mask.sum(), (~mask).sum()]).float()) * ws  # global |𝒮|, |𝒰|
        has_sel = bool(counts[0] > 0)
        xw_sel, y_sel = xw[mask], y[mask]
        need_before = has_sel and (
            hp.feedback == "first_order" or self.selector.rule in ("per_class", "per_batch")
        )
        with torch.no_grad():
            before = self._ce_w(xw_sel, y_sel) if need_before and mask.any() else y_sel.new_zeros(0).float()

        loss_s = (1 - lam) * smoothed_cross_entropy(s_logits, pseudo, hp.label_smoothing)
        loss_s = loss_s + lam * kd_loss(s_logits, t_w.detach(), hp.kd_temperature)
        ok = self.check_finite("student loss", loss_s)
        s_params = list(self.student.parameters())
        if ok:
            self.manual_backward(loss_s)
            all_reduce_grads(s_params)
        exact = hp.feedback == "exact"
        g_pseudo = [None if p.grad is None or not exact else p.grad.detach().clone() for p in s_params]
        eta = self.current_lr(s_opt)
        if ok:
            self.optimizer_step_manual(s_opt)
        s_opt.zero_grad(set_to_none=True)

        h = torch.zeros((), device=y.device)
        if has_sel and ok:
            if exact:
                after, h = self._exact_h(xw_sel, y_sel, counts[0] / ws, g_pseudo, eta)
            else:
                with torch.no_grad():
                    after = self._ce_w(xw_sel, y_sel) if mask.any() else before
                h, _ = first_order_feedback(before, after, sign=hp.feedback_sign, reduce=reduce)
            n_c = reduce(torch.bincount(y_sel, minlength=self.num_classes).float()) * ws
            h_c = torch.zeros_like(n_c)
            if need_before:
                h_c, _ = per_class_feedback(before, after, y_sel, self.num_classes, reduce=reduce)
            self.selector.update_ratios(h_c, n_c, h * check_sign(hp.feedback_sign), self.current_epoch)

        ramp = min(1.0, float(self.steps_done + 1) / max(hp.uda_ramp_steps, 1))
        loss_t = h.detach() * F.cross_entropy(t_s, pseudo)
        if has_sel:
            sel_sum = smoothed_cross_entropy(t_w[mask], y_sel, hp.label_smoothing, reduction="sum")
            loss_t = loss_t + (1 - lam) * sel_sum / (counts[0] / ws)
        uda, conf = uda_consistency(t_w[~mask], t_s[~mask], hp.uda_temperature, hp.uda_threshold)
        if counts[1] > 0:
            loss_t = loss_t + hp.alpha * ramp * uda * (~mask).sum() / (counts[1] / ws)
        if self.check_finite("teacher loss", loss_t):
            self.manual_backward(loss_t)
            all_reduce_grads(list(self.teacher.parameters()))
            self.optimizer_step_manual(t_opt)
        t_opt.zero_grad(set_to_none=True)
        self.steps_done += 1
        self._log_step(loss_s, loss_t, h, counts, n, mask, nb, conf)

    def _exact_h(
        self, x: Tensor, y: Tensor, mean_count: Tensor, g_pseudo: list, eta: float
    ) -> tuple[Tensor, Tensor]:
        """h = η⟨∇L_𝒮(θ'), g⟩ with ∇L_𝒮(θ') the global mean gradient over 𝒮 (all-reduced, DESIGN 4)."""
        params = named_params(self.student)
        after, grads = x.new_zeros(0), [None] * len(params)
        if x.shape[0]:  # under DDP this rank may have selected nothing: it still joins the all-reduce
            with torch.enable_grad():
                after = per_sample_cross_entropy(functional_forward(self.student, params, None, x), y)
                grads = torch.autograd.grad(
                    after.sum() / mean_count, list(params.values()), allow_unused=True
                )
        g = {k: torch.zeros_like(p) if gi is None else gi for (k, p), gi in zip(params.items(), grads)}
        g_after = list(all_reduce_mean_dict(g).values())
        return after.detach(), exact_feedback(g_after, g_pseudo, eta, sign=self.hparams.feedback_sign)

    # ---------------------------------------------------------------- diagnostics
    def _log_step(self, loss_s, loss_t, h, counts, n, mask, nb, conf) -> None:  # noqa: ANN001
        """Every step: losses, h, |𝒮|/B, R(c) mean/min/max, UDA mask rate, selection precision/recall (DESIGN 4.4)."""
        r = self.selector.current_ratio(self.current_epoch)
        logs = {"loss_student": loss_s, "loss_teacher": loss_t, "h": h, "selected_frac": counts[0] / counts.sum(),
                "R_mean": r.mean(), "R_min": r.min(), "R_max": r.max(),
                "uda_mask": conf.mean() if conf.numel() else torch.zeros(())}  # fmt: skip
        if has_true_labels(nb):
            c = self.all_reduce_mean(selection_counts(mask, nb["y"], nb["y_true"]))
            logs |= {"sel_precision": c[1] / c[0].clamp_min(1e-9), "sel_recall": c[1] / c[2].clamp_min(1e-9)}
        logs = {f"train/{k}": v.detach().float() for k, v in logs.items()}
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=n)
        self.log("train/h_epoch", h.float(), on_step=False, on_epoch=True, batch_size=n)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        r = self.selector.current_ratio(self.current_epoch)
        self.log_dict({f"train/R_c{c:03d}": r[c].float() for c in range(self.num_classes)}, on_epoch=True)
