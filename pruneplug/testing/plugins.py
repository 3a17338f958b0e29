"""Check any plugin by its kind; every registered plugin for a test suite."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from ..contracts import ImageAugmenter, Plugin, Pruner, Scorer, TextAugmenter
from ..registry import Entry, Registry, get_registry
from .augmenters import check_augmenter
from .declarations import _check_declarations
from .pruners import check_pruner
from .rules import _Check
from .scorers import check_scorer


def check_plugin(
    plugin: type[Plugin] | Plugin,
    *,
    params: Mapping[str, Any] | None = None,
    skip: Iterable[str] = (),
    seed: int = 0,
) -> None:
    """Check any plugin class (or object) with the checker of its kind, on the default data.

    For your own model, images or texts use :func:`check_scorer`, :func:`check_pruner` or
    :func:`check_augmenter`.
    """
    cls = plugin if isinstance(plugin, type) else type(plugin)
    kw: dict[str, Any] = {"params": params, "skip": skip, "seed": seed}
    # narrowed on the object or on the class, so that each checker gets what it is typed for
    if isinstance(plugin, Scorer) or (isinstance(plugin, type) and issubclass(plugin, Scorer)):
        check_scorer(plugin, **kw)
    elif isinstance(plugin, Pruner) or (isinstance(plugin, type) and issubclass(plugin, Pruner)):
        check_pruner(plugin, **kw)
    elif isinstance(plugin, (ImageAugmenter, TextAugmenter)) or (
        isinstance(plugin, type) and issubclass(plugin, (ImageAugmenter, TextAugmenter))
    ):
        check_augmenter(plugin, **kw)
    else:
        base = (Scorer, Pruner, ImageAugmenter, TextAugmenter)
        _check_declarations(cls, _Check(cls, skip), base)


def all_plugins(kind: str | None = None, registry: Registry | None = None) -> list[Entry]:
    """Every registered plugin entry (of one kind, if given): ``entry.cls`` is the class."""
    return (registry or get_registry()).entries(kind)


def parametrize_plugins(
    kind: str | None = None, argname: str = "plugin", registry: Registry | None = None
) -> Any:
    """A ``pytest.mark.parametrize`` over every registered plugin class (of one kind).

    Test ids are ``kind:name`` (``kind:provider:name`` when two providers share a name)::

        @parametrize_plugins()
        def test_conforms(plugin):
            check_plugin(plugin)
    """
    import pytest  # only needed by test suites

    entries = all_plugins(kind, registry)
    counts = Counter((e.kind, e.name) for e in entries)
    ids = [
        f"{e.kind}:{e.provider}:{e.name}" if counts[e.kind, e.name] > 1 else f"{e.kind}:{e.name}"
        for e in entries
    ]
    return pytest.mark.parametrize(argname, [e.cls for e in entries], ids=ids)
