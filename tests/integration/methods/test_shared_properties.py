"""Properties every method shares, each tested once here, parametrized over every method where it applies.

Tiny backbones (tiny_cnn; BN-free tiny_mlp for DDP) on `helpers.synthetic.SynthData`, which shapes each batch
from the method's own `train_views` / `needs_clean`. Per-method files keep what is specific to a method (its
maths, options and diagnostics).

=================================  ===  =====  ===  ====  ===  =====  ====  ======
property                           CE   CE-CF  DML  EMLC  MLC  MWNet  L2RW  SimCLR
=================================  ===  =====  ===  ====  ===  =====  ====  ======
(a) fp16 / clip / accumulation     ok   ok     no   no    no   no     no    ok
(b) each optimizer steps once      x    x      x2   x2    x2   x2     x2    x
(c) bit-exact end-of-epoch resume  x    x      x    x     x    x      x     x
(d) bf16-mixed fit is finite       x    x      x2   x2    x2   x2     x2    x
(e) y_true never trained on        x    x      x    x     x    x      x     x
(f) 2-rank DDP = 1 rank, 2x batch  x    x      x    x     x    x      x     --
=================================  ===  =====  ===  ====  ===  =====  ====  ======

(a) "no": the manual-optimization (bi-level) methods refuse each setting with a one-line ConfigError; "ok": the
automatic ones accept it. "x2": once per meta-gradient engine (DML `feedback`, the others `hypergrad`). CE-CF:
CE with `cross_fit_folds`. (f) does not apply to SimCLR: its negatives are the other samples of the rank's own batch (no all-gather, by design).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from helpers.synthetic import (
    C,
    SaveRankZeroState,
    ShuffledTruthData,
    SynthData,
    assert_same_state,
    fit,
    max_rel_diff,
    sgd,
    state,
    trainer,
)
from lnl.errors import ConfigError
from lnl.methods import CE, DML, EMLC, L2RW, MLC, MWNet, SimCLR
from lnl.methods.selection import SelectionConfig

pytestmark = pytest.mark.usefixtures("one_thread")

# Each method's options here: non-default ones where they exercise more code; momentum SGD with weight decay.
BASE: dict[str, tuple[type, dict[str, Any]]] = {
    "CE": (CE, {}),
    "CE-CF": (CE, {"cross_fit_folds": 3}),  # cross-fitted report: 3 networks, fold-masked losses
    "DML": (DML, {"teacher_optimizer": sgd(0.1), "uda_threshold": 0.3,
                  "selection": SelectionConfig(warmup_epochs=1, delta=0.01)}),
    "EMLC": (EMLC, {"teacher_optimizer": sgd(0.05, 0.0, 0.0), "corruption": "adversarial", "mix_gold": True}),
    "MLC": (MLC, {"mix_gold": True}),
    "MWNet": (MWNet, {"meta_optimizer": sgd(0.5, 0.0, 0.0), "virtual_step": "optimizer", "normalize": True}),
    "L2RW": (L2RW, {"virtual_step": "optimizer"}),
    "SimCLR": (SimCLR, {}),
}  # fmt: skip
METHODS = list(BASE)
MANUAL = ["DML", "EMLC", "MLC", "MWNet", "L2RW"]
# The option that picks a bi-level method's meta-gradient engine, and its values.
ENGINES = {"DML": ("feedback", ("first_order", "exact"))} | {
    m: ("hypergrad", ("jvp", "unrolled")) for m in ("EMLC", "MLC", "MWNet", "L2RW")
}


def _with_engines() -> list[Any]:
    """(method, engine option) pairs: once per engine for a bi-level method, once for the others."""
    cases = []
    for m in METHODS:
        option, values = ENGINES.get(m, (None, (None,)))
        cases += [
            pytest.param(m, {option: v} if option else {}, id=f"{m}-{v}" if option else m) for v in values
        ]
    return cases


WITH_ENGINES = _with_engines()


def params(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def method(name: str, backbone: str = "tiny_cnn", lr: float = 0.1, **extra: Any) -> Any:
    """A factory of method `name` (BASE options, then `extra`) on 4 classes."""
    cls, opts = BASE[name]
    kwargs = {"num_classes": C, "backbone": backbone, "optimizer": sgd(lr)} | opts | extra
    return lambda: cls(**kwargs)


# ------------------------------------------------------------------------------------------------ (a)
SETTINGS = [("precision", "16-mixed", "use 'bf16-mixed'"), ("gradient_clip_val", 1.0, "set model.grad_clip"),
            ("accumulate_grad_batches", 2, "use a larger data.batch_size")]  # fmt: skip


@pytest.mark.parametrize("setting,value,hint", SETTINGS, ids=[s[0] for s in SETTINGS])
@pytest.mark.parametrize("name", METHODS)
def test_fp16_clipping_and_accumulation_are_refused_by_manual_methods_only(
    name: str, setting: str, value, hint
) -> None:
    """(On CPU Lightning swaps 16-mixed for bf16 itself, so the guard runs with a stand-in trainer.)"""
    model = method(name)()
    settings = {"precision": "32-true", "gradient_clip_val": None, "accumulate_grad_batches": 1}
    model._trainer = SimpleNamespace(**(settings | {setting: value}))
    if name not in MANUAL:  # automatic optimization: Lightning's own scaler / clipping / accumulation apply
        assert model.automatic_optimization
        model.setup("fit")
        return
    assert not model.automatic_optimization
    with pytest.raises(ConfigError, match=f"{setting} = .*{name}.*{hint}") as info:
        model.setup("fit")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------ (b)
class CountSteps(Callback):
    """How often each optimizer stepped during each training batch (optimizer step hooks)."""

    def __init__(self) -> None:
        self.total: list[int] = []
        self.per_batch: list[list[int]] = []

    def on_train_start(self, trainer, module) -> None:
        self.total = [0] * len(trainer.optimizers)
        for i, opt in enumerate(trainer.optimizers):
            opt.register_step_post_hook(lambda *_, i=i: self.total.__setitem__(i, self.total[i] + 1))

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.before = list(self.total)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.per_batch.append([a - b for a, b in zip(self.total, self.before)])


@pytest.mark.parametrize("name,engine", WITH_ENGINES)
def test_each_network_is_stepped_exactly_once_per_training_step(name: str, engine: dict) -> None:
    counter = CountSteps()
    seed_everything(0, verbose=False)
    start = params(method(name, **engine)())
    model = fit(method(name, **engine), data=SynthData(2), callbacks=[counter])
    opts = model.trainer.optimizers
    assert counter.per_batch == [[1] * len(opts)] * 2
    # the optimizers own every trainable parameter exactly once, and each one moved them
    owned = [[p for g in o.param_groups for p in g["params"]] for o in opts]
    ids = [id(p) for ps in owned for p in ps]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    names = {id(p): n for n, p in model.named_parameters()}
    for ps in owned:
        assert any(not torch.equal(p.detach(), start[names[id(p)]]) for p in ps)


# ------------------------------------------------------------------------------------------------ (c)
RESUME_EXTRA = {  # options that keep state across the epoch boundary or draw random numbers per step
    "EMLC": {"k": 2, "corruption": "random"},  # the epoch's last batch closes the k-cycle; seeded corruption
    "MWNet": {"meta_optimizer": lambda p: torch.optim.Adam(p, lr=1e-3)},  # Adam's moments and step count
    "MLC": {"meta_optimizer": lambda p: torch.optim.Adam(p, lr=1e-3)},
}


@pytest.mark.parametrize("name", METHODS)
def test_resume_from_end_of_epoch_checkpoint_equals_the_uninterrupted_run(name: str, tmp_path) -> None:
    make = method(name, **RESUME_EXTRA.get(name, {}))
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    full = fit(make, max_epochs=2, data=SynthData(3), enable_checkpointing=True, callbacks=[every_epoch])
    (first,) = (tmp_path / "ckpt").glob("epoch=0-*.ckpt")
    seed_everything(0, verbose=False)  # the run's seed, as `lnl fit` sets it again
    torch.manual_seed(123)  # ... but another global RNG state and other initial weights must not matter
    resumed = make()
    trainer(max_epochs=2).fit(resumed, datamodule=SynthData(3), ckpt_path=first)
    assert_same_state(state(resumed), state(full))


# ------------------------------------------------------------------------------------------------ (d)
@pytest.mark.parametrize("name,engine", WITH_ENGINES)
def test_bf16_mixed_fit_is_finite(name: str, engine: dict) -> None:
    make = method(name, **engine)
    model = fit(make, precision="bf16-mixed", data=SynthData(3))
    end = state(model)
    assert all(torch.isfinite(v).all() for v in end.values() if v.is_floating_point())
    seed_everything(0, verbose=False)
    assert max_rel_diff(params(make()), end) > 0
    logged = {k: v for k, v in model.trainer.callback_metrics.items() if k.startswith("train/")}
    assert logged and all(torch.isfinite(v).all() for v in logged.values()), logged


# ------------------------------------------------------------------------------------------------ (e)
@pytest.mark.parametrize("name", METHODS)
def test_shuffled_true_labels_give_identical_parameters(name: str) -> None:
    make = method(name)
    reference = fit(make, data=SynthData(3))
    shuffled = fit(make, data=ShuffledTruthData(3))
    assert_same_state(state(shuffled), state(reference))


# ------------------------------------------------------------------------------------------------ (f)
# Options whose DDP semantics differ from one process by design are left out: per-rank random draws (DML's
# sampled pseudo labels), a gold/meta split of each rank's own clean batch (`mix_gold`), per-rank weight
# normalization (MW-Net's `normalize`); MLC/MW-Net/L2RW average their meta-gradients over ranks with `jvp`.
DDP_EXTRA = {
    "DML": {"pseudo_label": "argmax"},
    "EMLC": {"k": 2, "mix_gold": False},
    "MLC": {"hypergrad": "jvp", "mix_gold": False},
    "MWNet": {"hypergrad": "jvp", "normalize": False},
    "L2RW": {"hypergrad": "jvp"},
}


@pytest.mark.slow
@pytest.mark.xdist_group("ddp")
@pytest.mark.parametrize("name", [m for m in METHODS if m != "SimCLR"])
def test_two_process_ddp_equals_one_process_with_double_batch(name: str, tmp_path) -> None:
    """Gloo, 2 ranks with batch b each = 1 process with batch 2b (BN-free tiny_mlp, 2 epochs, to 1e-5)."""
    make = method(name, backbone="tiny_mlp", lr=0.2, **DDP_EXTRA.get(name, {}))
    data = SynthData(n_batches=3, b=8, bc=8)  # the global batch; each rank gets a contiguous half
    single = state(fit(make, data=data, max_epochs=2))
    out = tmp_path / "ddp.pt"
    fit(
        make, data=data, max_epochs=2, strategy="ddp_fork", devices=2, callbacks=[SaveRankZeroState(str(out))]
    )
    saved = torch.load(out)
    assert saved["world"] == 2 and saved["state"].keys() == single.keys()
    assert max_rel_diff(saved["state"], single) < 1e-5
    for key, value in single.items():
        if not value.is_floating_point():  # step counters, flags
            assert torch.equal(saved["state"][key], value), key
    seed_everything(0, verbose=False)
    assert max_rel_diff(params(make()), single) > 1e-3  # training moved the parameters


def test_the_synthetic_batches_follow_each_methods_class_attributes() -> None:
    """SynthData serves what `NoisyLabelDataModule` would: the views and streams each method declares."""
    seen = {}

    class Peek(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            seen[type(module).__name__] = copy.deepcopy(batch)

    for name in METHODS:
        fit(method(name), data=SynthData(1, b=4, bc=2), callbacks=[Peek()])
    views = {
        name: {k for k, v in b.noisy.views._asdict().items() if v is not None} for name, b in seen.items()
    }
    views = {name: v if len(v) > 1 else None for name, v in views.items()}
    assert views == {"CE": None, "DML": {"weak", "strong"}, "EMLC": None, "MLC": None, "MWNet": None,
                     "L2RW": None, "SimCLR": {"strong", "strong2"}}  # fmt: skip
    assert {n for n, b in seen.items() if b.clean is not None} == {"EMLC", "MLC", "MWNet", "L2RW"}
    for b in seen.values():
        assert b.noisy.y_true is not None and b.noisy.index is not None and b.noisy.y.shape == (4,)
