from __future__ import annotations

import pytest
import torch

from lnl.errors import ConfigError
from lnl.models.backbones import create_backbone
from lnl.models.init import load_matching_state


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_backbone("tiny_cnn", 4, in_chans=3)


def test_lightning_checkpoint_loads_the_backbone_but_not_the_classifier(tmp_path) -> None:
    donor, target = _net(0), _net(1)
    head = {k: v.clone() for k, v in target.get_classifier().state_dict().items()}
    projector = torch.nn.Linear(8, 8)
    state = {f"student.{k}": v for k, v in donor.state_dict().items()}
    state |= {f"projector.0.{k}": v for k, v in projector.state_dict().items()}  # a look-alike suffix
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "last.ckpt")
    counts = load_matching_state(str(tmp_path / "last.ckpt"), {"student": target})
    trunk = {k: v for k, v in donor.state_dict().items() if not k.startswith("fc.") and "head" not in k}
    assert counts == {"student": len(trunk)}
    own = target.state_dict()
    for k, v in trunk.items():
        assert torch.equal(own[k], v), k
    for k, v in target.get_classifier().state_dict().items():
        assert torch.equal(v, head[k])  # the classifier keeps its own initialization


def test_bad_init_checkpoints_fail_with_one_clear_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_matching_state(str(tmp_path / "missing.ckpt"), {"student": _net(0)})
    two = {f"student.{k}": v for k, v in _net(0).state_dict().items()}
    two |= {f"teacher.backbone.{k}": v for k, v in _net(1).state_dict().items()}
    torch.save(two, tmp_path / "two.pt")
    with pytest.raises(ConfigError, match="equally well"):
        load_matching_state(str(tmp_path / "two.pt"), {"student": _net(2)})
