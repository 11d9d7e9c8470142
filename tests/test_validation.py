"""The shared argument checks of ``workbench.validation``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.validation import check_bool, check_choice, check_int, check_number, check_positive


@pytest.mark.parametrize("value", [0, 3, np.int64(2)])
def test_check_int_accepts_integers(value):
    assert check_int("n", value, minimum=0) == int(value)
    assert type(check_int("n", value)) is int


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (True, {}, r"n must be an integer, got True"),
        (1.0, {"minimum": 1}, r"n must be an integer >= 1, got 1\.0"),
        (0, {"minimum": 1}, r"n must be an integer >= 1, got 0"),
        (5, {"maximum": 4}, r"n must be an integer <= 4, got 5"),
        (9, {"minimum": 0, "maximum": 3}, r"n must be an integer in \[0, 3\], got 9"),
        ("2", {}, r"n must be an integer, got '2'"),
        (None, {"minimum": 1}, r"n must be an integer >= 1, got None"),
        (0, {"minimum": 1, "allow_none": True}, r"n must be None or an integer >= 1, got 0"),
    ],
)
def test_check_int_rejects(value, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_int("n", value, **kwargs)


def test_check_int_allow_none():
    assert check_int("n", None, minimum=1, allow_none=True) is None


def test_check_number_intervals():
    assert check_number("x", 1) == 1.0 and type(check_number("x", np.float32(0.5))) is float
    assert check_number("g", 1.0, low=0.0, high=1.0, low_open=True) == 1.0
    assert check_number("x", math.inf, finite=False) == math.inf
    for value, kwargs, message in [
        (0.0, {"low": 0.0, "low_open": True}, r"g must be a finite number > 0, got 0\.0"),
        (1.0, {"low": 0.0, "high": 1.0, "high_open": True}, r"g must be a finite number in \[0, 1\)"),
        (math.nan, {"finite": False}, r"g must be a number, got nan"),
        (math.inf, {}, r"g must be a finite number, got inf"),
        (False, {}, r"g must be a finite number, got False"),
        ("1", {}, r"g must be a finite number, got '1'"),
        (-1.0, {"high": -2.0}, r"g must be a finite number <= -2"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_number("g", value, **kwargs)


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, True, None])
def test_check_positive_rejects(value):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        check_positive("temperature", value)


def test_check_choice():
    assert check_choice("mode", "a", ("a", "b")) == "a"
    for value in ("c", None, ["a"], 1):
        with pytest.raises(ValueError, match=r"mode must be one of 'a', 'b'; got"):
            check_choice("mode", value, ("a", "b"))


def test_check_bool():
    assert check_bool("flag", True) is True and check_bool("flag", np.bool_(False)) is False
    for value in (1, 0, "yes", None):
        with pytest.raises(ValueError, match="flag must be True or False"):
            check_bool("flag", value)


def test_check_weights_fills_defaults_and_names_the_bad_entry():
    from workbench.validation import check_weights

    assert check_weights("w", {"a": 2}, ("a", "b"), "thing", default=1.0) == {"a": 2.0, "b": 1.0}
    assert check_weights("w", None, ("a",), "thing", default=0.0) == {"a": 0.0}
    with pytest.raises(ValueError, match=r"w has unknown thing\(s\) \['c'\]; known: a, b"):
        check_weights("w", {"c": 1}, ("a", "b"), "thing", default=0.0)
    for bad in (-1, float("nan"), True, "1"):
        with pytest.raises(ValueError, match=r"w\['a'\] must be a finite number >= 0"):
            check_weights("w", {"a": bad}, ("a",), "thing", default=0.0)
    with pytest.raises(ValueError, match="w must be a mapping from thing name to weight"):
        check_weights("w", [1.0], ("a",), "thing", default=0.0)
