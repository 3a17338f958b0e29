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
    }
    assert data[2]["choices"] == ["a", "b"]
