"""The hooks a pruneplug plugin implements.

A plugin is a module (or any object) with functions marked ``@pruneplug.hookimpl`` whose names
are the hooks below. Each hook receives a ``register`` callback; call it once for every class
you provide. Publish the module through the ``pruneplug`` entry-point group of your
distribution and pruneplug finds it on import::

    [project.entry-points.pruneplug]
    my_plugin = "my_package.my_module"
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("pruneplug")
hookimpl = pluggy.HookimplMarker("pruneplug")


@hookspec
def register_scorers(register: Callable[[type], None]) -> None:
    """Register importance scorers: call ``register(cls)`` for each ``Scorer`` subclass."""


@hookspec
def register_pruners(register: Callable[[type], None]) -> None:
    """Register pruners: call ``register(cls)`` for each ``pruneplug.Pruner`` subclass."""


@hookspec
def register_augmenters(register: Callable[[type], None]) -> None:
    """Register augmenters: call ``register(cls)`` for each ``ImageAugmenter`` or
    ``TextAugmenter`` subclass."""
