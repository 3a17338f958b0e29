"""Controls are generated from declared parameters; explorers recompute on every change."""

import ipywidgets as w
import pytest

from pruneplug import Param, widgets


class Declared:
    params = (
        Param("amount", float, 0.25, low=0.0, high=0.5, help="fraction"),
        Param("k", int, 3, low=1, high=9),
        Param("mode", str, "a", choices=("a", "b")),
        Param("fast", bool, True),
        Param("scale", float, 1.5),
        Param("label", str, "x"),
    )


def test_controls_follow_declarations():
    made = widgets.controls(Declared)
    assert isinstance(made["amount"], w.FloatSlider)
    assert (made["amount"].min, made["amount"].max, made["amount"].value) == (0.0, 0.5, 0.25)
    assert made["amount"].tooltip == "fraction"
    assert isinstance(made["k"], w.IntSlider) and made["k"].max == 9
    assert isinstance(made["mode"], w.Dropdown) and made["mode"].options == ("a", "b")
    assert isinstance(made["fast"], w.Checkbox) and made["fast"].value is True
    assert isinstance(made["scale"], w.FloatText) and isinstance(made["label"], w.Text)
    made["k"].value = 7
    assert widgets.values(made) == {
        "amount": 0.25,
        "k": 7,
        "mode": "a",
        "fast": True,
        "scale": 1.5,
        "label": "x",
    }


def test_controls_by_registered_name():
    made = widgets.controls("unstructured", kind="pruner")
    assert made["scope"].options == ("local", "global") and made["scope"].value == "global"
    with pytest.raises(ValueError, match="give kind="):
        widgets.controls("unstructured")
