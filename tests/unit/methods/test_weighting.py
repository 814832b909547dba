"""What MW-Net and L2RW share (`SampleWeighting`): one-line option errors and weight diagnostics by true label."""

from __future__ import annotations

import inspect

import pytest
import torch
import yaml

from helpers.paths import CONFIGS
from helpers.synthetic import ShuffledTruthData, SynthData, fit, sgd
from lnl.errors import ConfigError
from lnl.methods import L2RW, MWNet
from lnl.methods.weighting import SampleWeighting

METHODS = {
    "mwnet": (MWNet, {"meta_optimizer": sgd(0.5, 0.0, 0.0)}),
    "l2rw": (L2RW, {}),
}


def factory(name: str, **kw):  # noqa: ANN201
    cls, extra = METHODS[name]
    return lambda: cls(**({"num_classes": 4, "backbone": "tiny_cnn", "optimizer": sgd(0.1)} | extra | kw))


@pytest.mark.parametrize("name", list(METHODS))
def test_bad_options_are_one_line_config_errors(name: str) -> None:
    bad = [
        ({"hypergrad": "bogus"}, "model.hypergrad = 'bogus': allowed values are jvp, unrolled"),
        ({"virtual_step": "momentum"}, "model.virtual_step = 'momentum': allowed values are sgd, optimizer"),
    ] + ([({"hidden": 0}, "model.hidden = 0: must be positive")] if name == "mwnet" else [])
    for kw, message in bad:
        with pytest.raises(ConfigError, match=message) as info:
            factory(name, **kw)()
        assert "\n" not in str(info.value)
    adam = lambda p: torch.optim.Adam(p, lr=1e-3)  # noqa: E731
    with pytest.raises(ConfigError, match="virtual_step = 'optimizer' needs an SGD") as info:
        fit(factory(name, optimizer=adam, virtual_step="optimizer"), data=SynthData(1))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", list(METHODS))
def test_weight_diagnostics_split_the_weights_by_true_label(name: str, monkeypatch) -> None:
    """Diagnostics read y_true (training never does: the shared y_true property): the epoch's mean n·w over the
    samples whose given label is right / wrong, recomputed from the weights the step used."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = SampleWeighting.log_weights

    def spy(self, w, nb):  # noqa: ANN001, ANN202
        seen.append((w.detach().clone(), (nb.y == nb.y_true).clone()))
        return real(self, w, nb)

    monkeypatch.setattr(SampleWeighting, "log_weights", spy)
    logged = fit(factory(name, hypergrad="jvp"), data=SynthData(2)).trainer.callback_metrics
    w, right = (torch.cat(t) for t in zip(*seen))
    assert len(seen) == 2 and right.any() and (~right).any()
    torch.testing.assert_close(logged["train/weight_right_label"], w[right].mean().float())
    torch.testing.assert_close(logged["train/weight_wrong_label"], w[~right].mean().float())
    assert not torch.allclose(w, w[0])  # the weights differ between samples (the split is not trivial)
    shuffled = fit(factory(name, hypergrad="jvp"), data=ShuffledTruthData(2)).trainer.callback_metrics
    assert logged["train/weight_right_label"] != shuffled["train/weight_right_label"]


EXPECTED_CONFIGS = {
    "mwnet": {
        f"mwnet_{ds}_{n}"
        for ds in ("cifar10", "cifar100")
        for n in ("unif40", "unif60", "flip40", "flip2_40")
    }
    | {"mwnet_digits_unif60"},
    "l2rw": {f"l2rw_cifar10_{n}_clean{c}" for n in ("unif40", "flip2_40") for c in (100, 1000)}
    | {"l2rw_cifar10_flip40_clean100", "l2rw_digits_unif60"},
}


@pytest.mark.parametrize("name", list(METHODS))
def test_configs_cover_the_recipes_and_bind(name: str) -> None:
    configs = CONFIGS
    cls = METHODS[name][0]
    names = {p.stem for p in configs.glob(f"{name}_*.yaml")}
    assert EXPECTED_CONFIGS[name] <= names
    sig = inspect.signature(cls.__init__)
    for stem in names:
        cfg = yaml.safe_load((configs / f"{stem}.yaml").read_text())
        assert cfg["model"]["class_path"] == f"lnl.methods.{cls.__name__}"
        sig.bind(None, 10, **cfg["model"]["init_args"])
        data = cfg["data"]["init_args"]
        assert data["val_labels"] == "clean" and data["clean_per_class"] > 0
