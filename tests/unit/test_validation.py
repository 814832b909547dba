"""lnl/validation.py: each validator returns what it accepts and refuses the rest with the one-line message that
names the setting, the bad value and what is allowed."""

from __future__ import annotations

import math

import pytest

from lnl.errors import ConfigError
from lnl.validation import at_least, existing_file, in_interval, off_or_positive, one_of, positive, registered


def test_one_of_names_the_allowed_values():
    assert one_of("model.hypergrad", "jvp", ("jvp", "unrolled")) == "jvp"
    with pytest.raises(ConfigError) as error:
        one_of("model.hypergrad", "adjoint", ("jvp", "unrolled"))
    assert str(error.value) == "model.hypergrad = 'adjoint': allowed values are jvp, unrolled"


def test_registered_returns_the_entry_and_lists_the_registry_in_order():
    registry = {"weak": 1, "strong": 2, "eval": 3}
    assert registered("view", "strong", registry) == 2
    with pytest.raises(ConfigError, match=r"^view = 'strong2': unknown; allowed are weak, strong, eval$"):
        registered("view", "strong2", registry)


@pytest.mark.parametrize("bad", [0, -1, math.nan])
def test_at_least_and_positive_refuse_small_values_and_nan(bad):
    assert at_least("n_max", 1, 1) == 1 and positive("data.batch_size", 3) == 3
    with pytest.raises(ConfigError, match=rf"^n_max = {bad}: must be >= 1$"):
        at_least("n_max", bad, 1)
    with pytest.raises(ConfigError, match=rf"^data.batch_size = {bad}: must be a positive integer$"):
        positive("data.batch_size", bad, "a positive integer")
    with pytest.raises(ConfigError, match=r": must be >= 1 \(1 = balanced\)$"):
        at_least("data.imbalance_ratio", bad, 1, ">= 1 (1 = balanced)")


def test_off_or_positive_accepts_zero():
    assert off_or_positive("watchdog.timeout_s", 0) == 0 and off_or_positive("watchdog.timeout_s", 2.5) == 2.5
    with pytest.raises(
        ConfigError, match=r"^watchdog.timeout_s = -1: must be 0 \(off\) or a positive number of s"
    ):
        off_or_positive("watchdog.timeout_s", -1, "seconds")
    with pytest.raises(
        ConfigError, match=r"^last_checkpoint.every_n_steps = -2: must be 0 \(off\) or positive$"
    ):
        off_or_positive("last_checkpoint.every_n_steps", -2)


@pytest.mark.parametrize(
    ("closed", "inside", "outside"), [("[)", [0.0, 0.5], [1.0, -0.1]), ("(]", [1.0, 0.5], [0.0, 1.1])]
)
def test_in_interval_honours_which_ends_belong(closed, inside, outside):
    for value in inside:
        assert in_interval("noise.rate", value, 0, 1, closed) == value
    for value in outside:
        with pytest.raises(
            ConfigError, match=rf"^noise.rate = {value}: must be in \{closed[0]}0, 1\{closed[1]}$"
        ):
            in_interval("noise.rate", value, 0, 1, closed)


def test_existing_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("{}")
    assert existing_file("config", path) == path
    with pytest.raises(ConfigError, match=r"config = .*nope.yaml: file not found; pass --config$"):
        existing_file("config", tmp_path / "nope.yaml", "pass --config")
