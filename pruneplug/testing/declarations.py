"""Rules on what a plugin declares: name, description, parameters and their validation."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..contracts import ImageAugmenter, Plugin
from ..params import Param, ParamError
from ..registry import NAME_PATTERN
from .rules import _Check


def _wrong_values(param: Param) -> list[tuple[Any, str]]:
    """Values ``param`` must refuse, each with what is wrong about it."""
    wrong_type = {bool: "yes", int: 1.5, float: "0.5", str: 3}[param.type]
    values: list[tuple[Any, str]] = [(wrong_type, "a value of the wrong type")]
    if param.choices is not None:
        outside: Any = "not-a-choice"
        if param.type in (int, float):
            outside = max(param.choices) + 1
        if param.type is not bool:
            values.append((outside, "a value outside its choices"))
    if param.type in (int, float):
        step = 1 if param.type is int else 1.0
        if param.low is not None:
            values.append((param.type(param.low) - step, "a value below its low bound"))
        if param.high is not None:
            values.append((param.type(param.high) + step, "a value above its high bound"))
    return values


def _check_declarations(cls: Any, check: _Check, base: tuple[type, ...]) -> None:
    if not isinstance(cls, type) or not issubclass(cls, base):
        check.fail("declaration.base", f"{cls!r} does not derive from any of them")
        return
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        check.fail("declaration.name", f"name is {name!r}")
    desc = getattr(cls, "description", None)
    if not isinstance(desc, str) or not desc.strip() or "\n" in desc.strip():
        check.fail("declaration.description", f"description is {desc!r}")
    params = getattr(cls, "params", None)
    if not isinstance(params, tuple) or not all(isinstance(p, Param) for p in params):
        check.fail("declaration.params", f"params is {params!r}")
        return
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        check.fail("declaration.params", f"parameter names repeat: {names}")
    for p in params:
        if not p.help.strip() or "\n" in p.help.strip():
            check.fail("declaration.params", f"parameter {p.name!r} has help {p.help!r}")
        if issubclass(cls, ImageAugmenter) and p.name == "p" and not p.probability:
            check.fail(
                "declaration.params",
                "parameter 'p' is not declared as the per-sample probability, so every sample "
                "is transformed whatever its value; declare it with pruneplug.params.probability()",
            )
    try:
        json.dumps([p.to_json() for p in params], allow_nan=False)
    except (TypeError, ValueError) as error:
        check.fail("declaration.json", f"json.dumps of the declarations failed: {error}")


def _check_params(cls: type[Plugin], check: _Check) -> None:
    obj = check.call("params.defaults", f"{cls.__name__}()", cls)
    config = getattr(obj, "config", None)
    if not isinstance(config, dict):
        check.fail("params.defaults", f"{cls.__name__}().config is {config!r}, not a dict")
        return
    for p in cls.params:
        if p.name not in config or config[p.name] != p.default:
            check.fail(
                "params.defaults",
                f"config[{p.name!r}] is {config.get(p.name, '<missing>')!r}, "
                f"the declared default is {p.default!r}",
            )
    wrong = [(p.name, v, why) for p in cls.params for v, why in _wrong_values(p)]
    for name, value, why in [*wrong, ("not_a_parameter", 1, "an undeclared keyword")]:
        call = f"{cls.__name__}({name}={value!r})"
        try:
            cls(**{name: value})
        except ParamError as error:
            if name not in str(error):
                check.fail(
                    "params.rejected",
                    f"{call} raised ParamError({error!s}) without naming {name!r}",
                )
            continue
        except Exception as error:
            check.fail(
                "params.rejected",
                f"{call} ({why}) raised {type(error).__name__}: {error}, not ParamError",
            )
            continue
        check.fail("params.rejected", f"{call} ({why}) was accepted")


def _start(
    plugin: Any, params: Mapping[str, Any] | None, skip: Iterable[str], base: tuple[type, ...]
) -> tuple[type[Any], _Check, dict[str, Any]]:
    """Class, checker and configuration of ``plugin`` (a class or an instance)."""
    cls = plugin if isinstance(plugin, type) else type(plugin)
    if params is None:
        params = {} if isinstance(plugin, type) else dict(getattr(plugin, "config", {}))
    check = _Check(cls, skip)
    _check_declarations(cls, check, base)
    _check_params(cls, check)
    return cls, check, dict(params)
