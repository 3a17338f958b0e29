import json

import pytest

from pruneplug import Param, ParamError
from pruneplug.params import validate

DECL = (
    Param("amount", float, 0.5, low=0.0, high=1.0, help="fraction"),
    Param("k", int, 3, low=1, high=9),
    Param("mode", str, "a", choices=("a", "b")),
    Param("fast", bool, False),
)


def test_defaults_fill_and_int_becomes_float():
    assert validate("x", DECL, {"amount": 1}) == {"amount": 1.0, "k": 3, "mode": "a", "fast": False}
    assert isinstance(validate("x", DECL, {"amount": 1})["amount"], float)


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        (
            {"amount": 1.5},
            "scorer 'm': parameter amount=1.5 is out of range (allowed: float in [0, 1])",
        ),
        ({"k": 2.0}, "parameter k=2.0 has type float, expected int"),
        ({"k": True}, "has type bool, expected int"),
        ({"mode": "c"}, "mode='c' is not an allowed choice (allowed: one of 'a', 'b')"),
        ({"amount": float("nan")}, "is NaN"),
        ({"speed": 1}, "unknown parameter(s) speed; it accepts: amount, k, mode, fast"),
    ],
)
def test_errors_name_plugin_parameter_value_and_range(values, fragment):
    with pytest.raises(ParamError) as info:
        validate("scorer 'm'", DECL, values)
    assert fragment in str(info.value)


def test_bad_declarations_are_refused():
    with pytest.raises(ValueError, match="default 5 is out of range"):
        Param("k", int, 5, low=0, high=1)
    with pytest.raises(TypeError, match="type must be one of"):
        Param("k", list, [])
    with pytest.raises(ValueError, match="low=2 is above high=1"):
        Param("k", int, 1, low=2, high=1)


def test_log_scale_needs_a_float_with_positive_bounds():
    assert Param("alpha", float, 0.2, low=1e-3, high=100.0, log=True).to_json()["log"] is True
    with pytest.raises(ValueError, match=r"log=True needs bounds 0 < low < high, got low=0.0"):
        Param("eps", float, 0.1, low=0.0, high=1.0, log=True)
    with pytest.raises(ValueError, match="got low=None, high=None"):
        Param("eps", float, 0.1, log=True)
    with pytest.raises(TypeError, match="log=True needs type float, got int"):
        Param("steps", int, 10, low=1, high=1000, log=True)


def test_declarations_serialise_to_json():
    data = json.loads(json.dumps([p.to_json() for p in DECL]))
    assert data[0] == {
        "name": "amount",
        "type": "float",
        "default": 0.5,
        "low": 0.0,
        "high": 1.0,
        "choices": None,
        "help": "fraction",
        "log": False,
        "probability": False,
        "at_most": None,
    }
    assert data[2]["choices"] == ["a", "b"]


def test_numpy_and_tensor_scalars_are_numbers_everywhere():
    import numpy as np
    import torch

    config = validate("t", DECL, {"amount": np.float32(0.25), "k": np.int64(3)})
    assert config["amount"] == 0.25 and type(config["amount"]) is float
    assert config["k"] == 3 and type(config["k"]) is int
    assert validate("t", DECL, {"amount": torch.tensor(0.5)})["amount"] == 0.5
    with pytest.raises(ParamError, match="k=1.5"):
        validate("t", DECL, {"k": np.float64(1.5)})


def test_names_must_be_identifiers_and_pairs_ordered():
    with pytest.raises(ValueError, match="not a Python identifier"):
        Param("max-size", int, 1)
    pair = (
        Param("low", float, 0.1, low=0.0, high=1.0, help="low", at_most="high"),
        Param("high", float, 0.5, low=0.0, high=1.0, help="high"),
    )
    assert validate("t", pair, {"low": 0.5, "high": 0.5}) == {"low": 0.5, "high": 0.5}
    with pytest.raises(ParamError, match="t: low=0.6 is above high=0.5; give low <= high"):
        validate("t", pair, {"low": 0.6})


def test_contradicting_declarations_are_refused_when_the_class_is_made():
    from pruneplug import ImageAugmenter
    from pruneplug.params import probability

    with pytest.raises(TypeError, match="at_most='hi', which names no float parameter"):

        class Dangling(ImageAugmenter):
            params = (Param("lo", float, 0.1, low=0.0, high=1.0, help="lo", at_most="hi"),)

    with pytest.raises(TypeError, match="several probability parameters"):

        class Twice(ImageAugmenter):
            params = (probability(0.5), probability(0.5, name="q"))

    with pytest.raises(ValueError, match="a probability is a float in"):
        Param("p", float, 0.5, low=0.0, high=2.0, probability=True)
