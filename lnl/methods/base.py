"""`LNLModule`: what every method shares : networks, metrics, val/test, optimizers, manual-step helpers."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torchmetrics.classification import MulticlassAccuracy

from lnl.data.batch import Batch, Stream, as_batch
from lnl.data.seed import run_seed
from lnl.errors import ConfigError
from lnl.methods.guards import FiniteChecks, check_manual_trainer_settings
from lnl.methods.guards import NonFiniteError as NonFiniteError  # re-exported: the CLI catches it
from lnl.methods.masked_mean import MaskedMean
from lnl.models.backbones import create_backbone
from lnl.models.init import load_matching_state
from lnl.models.layers import new_dropout_masks
from lnl.report.evidence import LabelEvidence, loss_based_evidence


def data_train_size(module: Any) -> int:
    """The attached data module's `train_size` (per-sample buffers are sized from it), 0 without one (bench)."""
    trainer = module._trainer
    return int(getattr(getattr(trainer, "datamodule", None), "train_size", 0) or 0) if trainer else 0


def has_true_labels(stream: Stream) -> bool:
    """Whether a train stream's batch carries any true label (for diagnostics only): the host-side flag the
    collate sets before the batch moves to the device, so this costs no device sync."""
    return stream.has_true and stream.y_true is not None


def _key(name: str) -> str:
    return name.replace("/", "__").replace(".", "_")


class LNLModule(FiniteChecks, LightningModule):
    """Base of every method: a student backbone, accuracy for each evaluated network, optimizer injection.

    A method sets the class attributes that tell the data module what it needs: `needs_clean` (a clean stream),
    `train_views` (("weak",) or ("weak", "strong")), `clean_augment` ("weak" or "autoaugment"), and lists the
    networks to evaluate in `eval_nets` (validation logs `val/acc` for the student, `val/acc_<name>` for others).
    A method's step is `train_step(batch, batch_idx)` on typed streams (`lnl.data.batch.Batch`); `training_step`
    converts and checks the batch first. Bi-level methods set `self.automatic_optimization = False` and use the
    manual-step helpers below.
    """

    needs_clean: ClassVar[bool] = False
    train_views: ClassVar[tuple[str, ...]] = ("weak",)
    clean_augment: ClassVar[str] = "weak"
    eval_nets: ClassVar[tuple[str, ...]] = ("student",)
    epoch_means: ClassVar[tuple[str, ...]] = ()  # names logged with `log_masked_mean`
    metric_suffix: str = ""  # val/test metrics name their checkpoint when set, e.g. `test/acc_last`

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet32_cifar",
        backbone_kwargs: dict[str, Any] | None = None,
        in_chans: int = 3,
        optimizer: OptimizerCallable = torch.optim.SGD,
        scheduler: LRSchedulerCallable | None = None,
        grad_clip: float | None = None,
        on_nonfinite: Literal["raise", "skip"] = "raise",
        init_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"model.num_classes = {num_classes}: need at least 2 classes")
        if grad_clip is not None and grad_clip <= 0:
            raise ConfigError(f"model.grad_clip = {grad_clip}: must be a positive norm or null")
        self.save_hyperparameters(ignore=[k for k in self._callable_arg_names()])
        self.num_classes = num_classes
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.student = self.build_backbone(backbone, backbone_kwargs)
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{name}": MulticlassAccuracy(num_classes, average="micro")
                for stage in ("val", "test")
                for name in self.eval_nets
            }
        )
        self.means = nn.ModuleDict({_key(name): MaskedMean() for name in self.epoch_means})
        self.skipped_nonfinite = 0  # training steps skipped by on_nonfinite: skip (kept in checkpoints)
        self._skipped_batch = -1
        self._first_nonfinite: dict[str, Tensor] = {}  # deferred checks: term -> first bad step (-1: none)

    def _callable_arg_names(self) -> list[str]:
        import inspect

        names: list[str] = []
        for cls in type(self).__mro__:
            if "__init__" in vars(cls):
                names += [
                    p
                    for p in inspect.signature(cls.__init__).parameters
                    if "optimizer" in p or "scheduler" in p
                ]
        return sorted(set(names))

    def init_targets(self) -> dict[str, nn.Module]:
        """The networks `init_checkpoint` initializes (a method with its own teacher backbone adds it)."""
        return {"student": self.student}

    def load_init_checkpoint(self) -> None:
        """Load `init_checkpoint` (SSL / pretrained backbone weights; EMLC starts from SimCLR) into `init_targets()`."""
        if self.hparams.get("init_checkpoint"):
            load_matching_state(self.hparams.init_checkpoint, self.init_targets())

    def configure_model(self) -> None:
        """At the start of a fit from scratch, load `init_checkpoint` (not when resuming, testing or reloading a
        checkpoint: those weights come from the checkpoint, and the init file need not exist any more)."""
        trainer, done = self._trainer, getattr(self, "_init_loaded", False)
        if trainer is not None and trainer.state.fn == "fit" and trainer.ckpt_path is None and not done:
            self.load_init_checkpoint()
            self._init_loaded = True

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Put a loaded checkpoint's weights and method state (e.g. DML's diagnostics) into this module in place;
        weights that do not fit this model are one ConfigError line, not a traceback."""
        try:
            self.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as error:  # missing / unexpected keys or shapes: another model's checkpoint
            detail = " ".join(str(error).split())
            raise ConfigError(
                f"the checkpoint's weights do not fit this {type(self).__name__}: {detail[:300]}"
            ) from None
        self.on_load_checkpoint(checkpoint)

    def build_backbone(self, name: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
        """A backbone with this module's classes and input channels (used for students and teachers alike)."""
        return create_backbone(name, self.num_classes, in_chans=self.hparams.in_chans, **(kwargs or {}))

    # ---------------------------------------------------------------- lifecycle and guards
    def setup(self, stage: str) -> None:
        trainer = self._trainer
        if trainer is not None and not self.automatic_optimization:
            check_manual_trainer_settings(
                type(self).__name__,
                trainer.precision,
                trainer.gradient_clip_val,
                trainer.accumulate_grad_batches,
            )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """A new step: new dropout masks (`StepDropout`, shared by all forwards of a batch within the step). Manual-
        optimization methods average every gradient by hand: keep DDP's reducer idle (Lightning re-enables
        `require_backward_grad_sync` after each training step, so this runs every batch).
        """
        new_dropout_masks(self)
        ddp = self.trainer.strategy.model
        if not self.automatic_optimization and isinstance(ddp, DistributedDataParallel):
            ddp.require_backward_grad_sync = False

    def on_validation_epoch_start(self) -> None:
        """Rank 0's BN statistics in every evaluated network before evaluation (each rank saw other batches)."""
        if not self.automatic_optimization and dist.is_available() and dist.is_initialized():
            for name in self.eval_nets:
                for buf in getattr(self, name).buffers():
                    dist.broadcast(buf, src=0)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        every = self.trainer.log_every_n_steps if self._trainer is not None else 1
        if self._first_nonfinite and (batch_idx + 1) % max(every, 1) == 0:
            self.raise_deferred_nonfinite()

    def on_train_epoch_end(self) -> None:
        self.raise_deferred_nonfinite()
        if self.automatic_optimization:
            return
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()

    # ---------------------------------------------------------------- optimizers
    def make_optimizer(self, factory: OptimizerCallable, params: Any) -> torch.optim.Optimizer:
        """Instantiate an injected optimizer for a parameter group (one per network)."""
        return factory(params)

    def make_scheduler(self, factory: LRSchedulerCallable | None, optimizer: torch.optim.Optimizer) -> Any:
        """Instantiate an injected LR scheduler, or return None."""
        return None if factory is None else factory(optimizer)

    def student_parameters(self) -> list[nn.Parameter]:
        """What the student optimizer updates (a method with a student-side head, e.g. a projector, adds it)."""
        return list(self.student.parameters())

    def two_optimizers(
        self, params: Any, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None
    ) -> tuple[list, list]:
        """The student's optimizer and a second one (teacher / meta-net) for `params`, with epoch schedulers."""
        opts = [self.make_optimizer(self.optimizer_factory, self.student_parameters()),
                self.make_optimizer(optimizer, params)]  # fmt: skip
        scheds = [self.make_scheduler(f, o) for f, o in zip((self.scheduler_factory, scheduler), opts)]
        return opts, [{"scheduler": s, "interval": "epoch"} for s in scheds if s is not None]

    def configure_optimizers(self) -> Any:
        optimizer = self.make_optimizer(self.optimizer_factory, self.student_parameters())
        scheduler = self.make_scheduler(self.scheduler_factory, optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ---------------------------------------------------------------- manual-optimization helpers
    def optimizer_step_manual(self, opt: Any) -> None:
        """Clip (model.grad_clip), step and zero one optimizer in manual mode."""
        if self.hparams.grad_clip:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        opt.zero_grad(set_to_none=True)

    def finite_batch(self, batch: Batch) -> bool:
        """`check_finite` on the training batch's images (every stream, every view), before any forward pass."""
        images = [view.detach().float().sum() for stream in batch.streams().values()
                  for view in stream.views if view is not None]  # fmt: skip
        return self.check_finite("input batch", torch.stack(images)) if images else True

    def training_step(self, batch: Batch | dict[str, Any], batch_idx: int) -> Tensor | None:
        """The batch as typed streams (`lnl.data.batch`; another data module's dict batch is converted once),
        its images checked finite, then the method's `train_step` (nothing with on_nonfinite: skip, before any
        forward pass updates BN statistics)."""
        batch = as_batch(batch)
        if not self.finite_batch(batch):
            return None
        return self.train_step(batch, batch_idx)

    def train_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        """One training step of the method on typed streams (a loss under automatic optimization, else None)."""
        raise NotImplementedError

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.raise_deferred_nonfinite()  # never write a checkpoint past an unreported non-finite step
        checkpoint["skipped_nonfinite"] = self.skipped_nonfinite

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_nonfinite = int(checkpoint.get("skipped_nonfinite", 0))

    def step_generator(self, device: torch.device | str) -> torch.Generator:
        """A generator seeded from (run seed, global step, rank): resume- and worker-count-independent sampling."""
        seed = run_seed()
        rank = self.global_rank if self._trainer is not None else 0
        generator = torch.Generator(device=device)
        generator.manual_seed((seed * 1_000_003 + self.global_step * 7919 + rank * 104_729) % (2**63 - 1))
        return generator

    def all_reduce_mean(self, value: Tensor) -> Tensor:
        """Mean of a tensor over ranks (returns it unchanged outside DDP)."""
        from lnl.hypergrad.distributed import all_reduce_mean

        return all_reduce_mean(value)

    def log_masked_mean(self, name: str, values: Tensor, mask: Tensor) -> None:
        """Accumulate mean(values[mask]) over the epoch (all ranks) without a host sync; NaN if nothing was masked in."""
        metric = self.means[_key(name)]
        metric.update(values.detach().float(), mask)
        self.log(name, metric, on_step=False, on_epoch=True)

    # ---------------------------------------------------------------- evaluation
    def eval_logits(self, name: str, x: Tensor) -> Tensor:
        """Logits of evaluated network `name` (override when a network needs more than the image)."""
        return getattr(self, name)(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)

    def _eval_step(self, stage: str, batch: dict[str, Tensor]) -> None:
        for name in self.eval_nets:
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(self.eval_logits(name, batch["x"]), batch["y"])
            key = (f"{stage}/acc" if name == "student" else f"{stage}/acc_{name}") + self.metric_suffix
            self.log(key, metric, on_step=False, on_epoch=True, prog_bar=name == "student")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Class probabilities of the student (the prediction writer turns them into `predictions.csv`)."""
        return torch.softmax(self.student(batch["x"]).float(), dim=-1)

    # ---------------------------------------------------------------- label report
    def begin_label_evidence(self) -> None:
        """Called once before `label_evidence` runs over the training set (a method precomputes what it needs)."""

    def label_evidence(self, x: Tensor, y: Tensor, index: Tensor) -> LabelEvidence:
        """Evidence that a given label is wrong; by default CE's loss-based score of the student (lnl.report)."""
        return loss_based_evidence(self.student(x), y)
