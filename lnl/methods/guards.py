"""Guards of a training step: Trainer settings a manual-optimization method refuses, and finiteness checks.

A loss or gradient that turns NaN/inf stops the run with one line naming the step and the term (or, with
`on_nonfinite: skip`, skips the step); checks on CUDA may be deferred so that a step costs no host-device sync.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from lnl.errors import ConfigError


class NonFiniteError(RuntimeError):
    """A loss or gradient term became NaN/inf; the message names the step and the term."""


def check_manual_trainer_settings(
    method: str, precision: Any, gradient_clip_val: float | None = None, accumulate_grad_batches: int = 1
) -> None:
    """Refuse Trainer settings that break hand-written (meta-)gradients of a manual-optimization method."""
    if str(precision) in ("16-mixed", "16", "16-true"):
        raise ConfigError(
            f"trainer.precision = {str(precision)!r} for {method}: fp16 loss scaling would silently rescale "
            "the meta-gradients this method writes itself; use 'bf16-mixed' or '32'"
        )
    if gradient_clip_val:
        raise ConfigError(
            f"trainer.gradient_clip_val = {gradient_clip_val} for {method}: not allowed with manual "
            "optimization; set model.grad_clip instead"
        )
    if accumulate_grad_batches != 1:
        raise ConfigError(
            f"trainer.accumulate_grad_batches = {accumulate_grad_batches} for {method}: not allowed "
            "with manual optimization; use a larger data.batch_size"
        )


class FiniteChecks:
    """Finiteness checks of an `LNLModule` (a mixin: it reads the module's hparams, trainer and step counters)."""

    # Finiteness checks: "eager" reads each check back at once (a host-device sync); "deferred" keeps a flag on
    # the device and reads it every `log_every_n_steps` steps, at epoch end and before a checkpoint is written;
    # None: deferred for CUDA tensors with on_nonfinite: raise (skipping a step needs its answer at once).
    finite_checks: Literal["eager", "deferred"] | None = None

    def check_finite(self, name: str, value: Tensor) -> bool:
        """True if `value` is finite; otherwise raise NonFiniteError (or return False with on_nonfinite=skip).

        Deferred (`finite_checks`): always True; the first non-finite step per term is kept on the device and
        `raise_deferred_nonfinite` raises for it, naming that step and term, at the next check point.
        """
        mode = self.finite_checks or (
            "deferred" if value.is_cuda and self.hparams.on_nonfinite == "raise" else "eager"
        )
        if mode == "deferred":
            ok = torch.isfinite(value.detach()).all()
            first = self._first_nonfinite.get(name)
            first = torch.full((), -1, dtype=torch.long, device=value.device) if first is None else first
            self._first_nonfinite[name] = torch.where((first < 0) & ~ok, self.global_step, first)
            return True
        if bool(torch.isfinite(value.detach()).all()):
            return True
        if self.hparams.on_nonfinite == "skip":
            batch = self._trainer.fit_loop.epoch_loop.batch_progress.total.ready if self._trainer else 0
            if batch != self._skipped_batch:  # a step with several non-finite terms counts once
                self.skipped_nonfinite, self._skipped_batch = self.skipped_nonfinite + 1, batch
            self.log("train/skipped_nonfinite", 1.0, reduce_fx="sum")
            return False
        raise NonFiniteError(
            f"non-finite {name} at step {self.global_step} (epoch {self.current_epoch}); "
            "lower the learning rate, or set model.on_nonfinite: skip to skip such steps"
        )

    def raise_deferred_nonfinite(self) -> None:
        """Read the deferred finiteness flags (one host-device sync) and raise for the earliest bad step."""
        if not self._first_nonfinite:
            return
        names = list(self._first_nonfinite)
        steps = torch.stack([self._first_nonfinite[n] for n in names]).tolist()
        bad = [
            (s, i, n) for i, (s, n) in enumerate(zip(steps, names)) if s >= 0
        ]  # ties: the first-checked term
        if bad:
            step, _, name = min(bad)
            raise NonFiniteError(
                f"non-finite {name} at step {step} (found at step {self.global_step}, epoch {self.current_epoch}); "
                "lower the learning rate, or set model.on_nonfinite: skip to skip such steps"
            )
