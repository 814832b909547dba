"""MLC: Meta Label Correction (Zheng et al. 2021), the baseline of EMLC (DESIGN 4.3).

The meta-net reads the student's detached penultimate features and the noisy label; its meta-gradient is the
one-step look-ahead gradient of the clean loss, computed either faithfully through a differentiable virtual step
(`hypergrad: unrolled`, second order) or with the JVP engine (`hypergrad: jvp`, same value, tested).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from lnl.errors import ConfigError
from lnl.methods.base import LNLModule, has_true_labels
from lnl.methods.meta_step import MetaStepMixin, check_choice
from lnl.models.backbones import features_and_logits
from lnl.models.teachers import MetaLabelNet


def _adam_3e4(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=3e-4)


class MLC(MetaStepMixin, LNLModule):
    """Student S and meta-net q(sg h_S(x), ỹ); per batch one real student step and one meta step.

    Order (as the original): S(x) and h → q → student loss softCE(S(x), q) (+ CE on half the clean batch with
    `mix_gold`, the other half being the meta batch) → `unrolled`: ∇_θ with create_graph, θ'(α) = the optimizer's
    own SGD step (momentum, weight decay; MLC's `update_params`), CE(S(x_m; θ'(α))) differentiated w.r.t. α, then
    the real step with the same gradient; `jvp`: real step, g_w at θ', meta loss mean⟨sg u, q⟩ with
    u = J_{log S(x; θ)}·(η g_w). Both give dL/dα exactly for an SGD student; one meta-optimizer step.

    Decisions: MLC's discounted multi-step accumulation is not reproduced (one step, k = 1); the meta-net's
    first-layer input is the student's features at θ before the step; `init_checkpoint` initializes the student.
    """

    needs_clean: ClassVar[bool] = True
    epoch_means: ClassVar[tuple[str, ...]] = ("train/label_recovery",)
    bench_variants: ClassVar[dict[str, dict]] = {
        "jvp": {"hypergrad": "jvp"},
        "unrolled": {"hypergrad": "unrolled"},
    }

    def __init__(
        self,
        num_classes: int,
        meta_optimizer: OptimizerCallable = _adam_3e4,
        meta_scheduler: LRSchedulerCallable | None = None,
        hypergrad: Literal["jvp", "unrolled"] = "unrolled",
        skip: bool = False,
        mix_gold: bool = False,
        embed_dim: int = 128,
        hidden: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        check_choice("hypergrad", hypergrad, ("jvp", "unrolled"))
        if embed_dim < 1 or hidden < 1:
            raise ConfigError(f"model.embed_dim/hidden = {embed_dim}/{hidden}: must be positive")
        self.automatic_optimization = False
        self.meta_net = MetaLabelNet(int(self.student.num_features), num_classes, embed_dim, hidden, skip)
        self.meta_optimizer_factory, self.meta_scheduler_factory = meta_optimizer, meta_scheduler

    def configure_optimizers(self) -> Any:
        return self.two_optimizers(
            self.meta_net.parameters(), self.meta_optimizer_factory, self.meta_scheduler_factory
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        hp, nb, cb = self.hparams, batch["noisy"], batch["clean"]
        s_opt, m_opt = self.optimizers()
        x, y, xc, yc = nb["x"], nb["y"], cb["x"], cb["y"]
        meta, x_s, gold = (xc, yc), x, None
        if hp.mix_gold:
            half = yc.shape[0] // 2
            gold, meta = F.one_hot(yc[:half], self.num_classes), (xc[half:], yc[half:])
            x_s = torch.cat([x, xc[:half]])
        feats, logits = features_and_logits(self.student, x_s)
        q = self.meta_net(feats[: y.shape[0]], y)
        targets = q if gold is None else torch.cat([q, gold.to(q.dtype)])
        m_params = list(self.meta_net.parameters())
        out = self._soft_target_step(s_opt, logits, targets, m_params, meta)
        if out is None:
            return
        if hp.hypergrad == "jvp":
            pending = [{"theta": out["theta"], "eta": out["eta"], "x": x_s, "q": q, "denom": x_s.shape[0]}]
            sur, _, meta_loss = self._jvp_meta(pending, meta, "sum")
            meta_grads = list(torch.autograd.grad(sur, m_params, allow_unused=True))
        else:
            meta_grads, meta_loss = out["meta_grads"], self.all_reduce_mean(out["meta_loss"])
        self._apply_grads(m_opt, m_params, meta_grads, "meta-net meta-gradient")
        logs = {"train/loss_student": out["loss"], "train/meta_loss": meta_loss}
        if has_true_labels(nb):
            y_true = nb["y_true"]
            self.log_masked_mean("train/label_recovery", q.detach().argmax(1) == y_true, y_true >= 0)
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=y.shape[0])
