"""`LNLModule.restore`: a checkpoint whose weights do not fit the model is one ConfigError line, not a traceback."""

from __future__ import annotations

import pytest

from helpers.synthetic import C, sgd
from lnl.errors import ConfigError
from lnl.methods import CE


def test_weights_of_another_backbone_are_one_config_error_line() -> None:
    model = CE(num_classes=C, backbone="tiny_cnn", optimizer=sgd(0.1))
    state = {"state_dict": model.state_dict()}
    model.restore(state)  # its own weights load
    other = CE(num_classes=C + 1, backbone="tiny_cnn", optimizer=sgd(0.1))
    with pytest.raises(
        ConfigError, match=r"^the checkpoint's weights do not fit this CE: .*size mismatch"
    ) as error:
        other.restore(state)
    assert "\n" not in str(error.value)
