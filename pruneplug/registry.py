"""Plugin discovery and the registries of scorers, pruners and augmenters.

Plugins come from the ``pruneplug`` entry-point group of every installed distribution -
pruneplug's own built-ins included, so they prove the path a third party uses - and from objects
registered live (:func:`register`, e.g. in a notebook).

Rules, each chosen so that one plugin can never break another:

* **Failures are contained.** A plugin whose import fails, whose hook raises, or that registers
  something that is not a valid plugin class, is skipped with a :class:`PluginLoadWarning` naming
  it and its distribution; the failure is listed in :attr:`Registry.failures` and by
  ``pruneplug plugins``. Everything else loads.
* **Duplicate names are never overridden silently.** When two providers register the same name
  for one kind, both are kept under qualified names ``"<provider>:<name>"`` and asking for the
  bare name raises an error listing both. The same provider registering a name again (re-running
  a notebook cell) replaces its earlier class. A **built-in** name is the exception: it keeps
  meaning the built-in, and the other provider's class is ``"<provider>:<name>"`` (with a
  warning), so installing a plugin never changes what ``"magnitude"`` means to your code or to
  pruneplug's own defaults.
* **Names resolve predictably.** ``provider:name`` takes the distribution name or the
  entry-point name; distribution and entry-point names compare normalised as PEP 503 does
  (case-insensitive, ``-``, ``_`` and ``.`` alike), so ``My_Plugins:x`` finds ``my-plugins``.
* **Disabling.** ``PRUNEPLUG_DISABLE`` is a comma-separated list of entry-point names,
  distribution names, registered names or ``provider:name`` to skip, without uninstalling
  anything. A name that matches nothing is warned about (a typo would otherwise disable
  nothing, silently).
* **Misspelled hooks are reported.** A ``@hookimpl`` whose name is not a pruneplug hook (say
  ``register_scorer``) would never be called; the plugin is named with the hook and the
  closest real hook name.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .contracts import ImageAugmenter, Plugin, Pruner, Scorer, TextAugmenter
from .params import Param

ENTRY_POINT_GROUP = "pruneplug"
BUILTIN = "pruneplug"  # the provider (distribution) of the built-in plugins
DISABLE_ENV = "PRUNEPLUG_DISABLE"
LIVE = "live"  # provider name of plugins registered from running code

#: kind -> (hook name, base classes a registered class must derive from)
KINDS: dict[str, tuple[str, tuple[type[Plugin], ...]]] = {
    "scorer": ("register_scorers", (Scorer,)),
    "pruner": ("register_pruners", (Pruner,)),
    "augmenter": ("register_augmenters", (ImageAugmenter, TextAugmenter)),
}
#: What a registered plugin name must look like (a Python-identifier-like word, dashes allowed).
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def normalise(name: str) -> str:
    """A provider, entry-point or plugin name as PEP 503 compares names: ``My_Pkg`` -> ``my-pkg``.

    Each ``provider:name`` half is normalised on its own.
    """
    return ":".join(re.sub(r"[-_.]+", "-", part).lower() for part in name.strip().split(":"))


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded; the others were."""


class UnknownPluginError(KeyError):
    """No plugin of that kind has that name (the message lists the available ones)."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    """One registered class and where it came from."""

    kind: str
    name: str
    cls: type[Plugin]
    provider: str  # distribution name, or "live"
    version: str
    plugin: str  # entry-point (pluggy plugin) name

    def to_json(self) -> dict[str, Any]:
        """What ``pruneplug plugins --json`` prints for this entry."""
        return {
            "kind": self.kind,
            "name": self.name,
            "description": self.cls.description,
            "provider": self.provider,
            "version": self.version,
            "params": [p.to_json() for p in self.cls.params],
        }


@dataclass(frozen=True)
class Failure:
    """A plugin (or one thing it registered) that was skipped, and why."""

    plugin: str
    provider: str
    version: str
    reason: str


def _invalid(cls: Any, bases: tuple[type[Plugin], ...]) -> str | None:
    """Say why ``cls`` cannot be registered under ``bases``, or ``None`` if it can."""
    expected = " or ".join(b.__name__ for b in bases)
    if not isinstance(cls, type) or not issubclass(cls, bases):
        return f"registered {cls!r}, which is not a subclass of {expected}"
    if not isinstance(cls.name, str) or not NAME_PATTERN.match(cls.name):
        return f"{cls.__name__}.name={cls.name!r} must be an identifier-like string"
    if not isinstance(cls.description, str) or not cls.description.strip():
        return f"{cls.__name__} needs a one-line description"
    if not isinstance(cls.params, tuple) or not all(isinstance(p, Param) for p in cls.params):
        return f"{cls.__name__}.params must be a tuple of pruneplug.Param"
    return None


class Registry:
    """Loads plugins and looks up their classes by kind and name.

    Args:
        entry_points: discover installed plugins (``False`` in tests that register exactly
            the plugins they need).
        disabled: names to skip; default: the ``PRUNEPLUG_DISABLE`` environment variable.
    """

    def __init__(self, entry_points: bool = True, disabled: Iterable[str] | None = None) -> None:
        if disabled is None:
            disabled = os.environ.get(DISABLE_ENV, "").split(",")
        #: normalised name -> the spelling given, for names to skip
        self.disabled = {normalise(d): d.strip() for d in disabled if d.strip()}
        self._disabled_used: set[str] = set()
        self.pm = pluggy.PluginManager("pruneplug")
        self.pm.add_hookspecs(hookspecs)
        self._import_failures: list[Failure] = []
        self._hook_failures: list[Failure] = []
        self._providers: dict[str, tuple[str, str]] = {}  # plugin name -> (dist, version)
        self._entries: dict[str, dict[str, list[Entry]]] = {}
        if entry_points:
            self._load_entry_points()
        self._collect()
        if entry_points:
            self._warn_unknown_disabled()

    # ----------------------------------------------------------------- loading

    @property
    def failures(self) -> list[Failure]:
        """Plugins (or registered objects) that were skipped, with the reason."""
        return self._import_failures + self._hook_failures

    def _fail(
        self, plugin: str, reason: str, at_import: bool = False, one_class: bool = False
    ) -> None:
        """Record and warn that ``plugin`` (or, with ``one_class``, one thing it registered
        while the rest of it loads) was skipped."""
        provider, version = self._providers.get(plugin, (LIVE, ""))
        failure = Failure(plugin, provider, version, reason)
        (self._import_failures if at_import else self._hook_failures).append(failure)
        what = "loaded, but one of its registrations was skipped" if one_class else "was skipped"
        warnings.warn(
            f"pruneplug plugin {plugin!r} from {provider} {version} {what}: {reason}. "
            f"Fix or uninstall it, or set {DISABLE_ENV}={plugin} to silence this.",
            PluginLoadWarning,
            stacklevel=3,
        )

    def _is_disabled(self, *names: str) -> bool:
        """Whether any of ``names`` is disabled (and remember which disabled names were used)."""
        hits = {normalise(n) for n in names} & self.disabled.keys()
        self._disabled_used |= hits
        return bool(hits)

    def _warn_unknown_disabled(self) -> None:
        unknown = sorted(self.disabled[n] for n in self.disabled.keys() - self._disabled_used)
        if unknown:
            warnings.warn(
                f"{DISABLE_ENV} names {', '.join(map(repr, unknown))}, which match no installed "
                "entry point, distribution or registered plugin name, so nothing was disabled "
                "for them; check the spelling (`pruneplug plugins` lists what is installed)",
                PluginLoadWarning,
                stacklevel=3,
            )

    def _load_entry_points(self) -> None:
        seen: set[tuple[str, str]] = set()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "unknown"
            version = ep.dist.version if ep.dist else ""
            if self._is_disabled(ep.name, dist, f"{dist}:{ep.name}") or (dist, ep.name) in seen:
                continue  # disabled, or the same distribution found twice on sys.path
            seen.add((dist, ep.name))
            # entry-point names are unique only within a distribution: qualify a clash
            name = f"{dist}:{ep.name}" if ep.name in self._providers else ep.name
            self._providers[name] = (dist, version)
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=name)
            except Exception as exc:  # any import or validation error is the plugin's
                hint = (
                    "; a hook takes one argument, named register: def register_scorers(register)"
                    if isinstance(exc, pluggy.PluginValidationError)
                    else ""
                )
                self._fail(name, f"{type(exc).__name__}: {exc}{hint}", at_import=True)
            else:
                self._check_hook_names(name, plugin)

    def _check_hook_names(self, name: str, plugin: object) -> None:
        """Report every ``@hookimpl`` of ``plugin`` that is not a pruneplug hook (a typo)."""
        hooks = [hook_name for hook_name, _ in KINDS.values()]
        for attr in dir(plugin):
            function = getattr(plugin, attr, None)
            if attr in hooks or not hasattr(function, f"{hookspecs.hookimpl.project_name}_impl"):
                continue
            close = difflib.get_close_matches(attr, hooks, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the hooks are {', '.join(hooks)}"
            self._fail(
                name,
                f"@hookimpl {attr!r} is not a pruneplug hook, so it is never called; {hint}",
                at_import=True,
            )

    def register_plugin(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object (a module or object with ``@hookimpl`` functions) live."""
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        self._providers[name] = (LIVE, "")
        self.pm.register(plugin, name=name)
        self._check_hook_names(name, plugin)
        self._collect()

    def _collect(self) -> None:
        """Call every plugin's hooks, one plugin at a time, and rebuild the tables."""
        self._entries = {kind: {} for kind in KINDS}
        self._hook_failures = []
        for kind, (hook_name, bases) in KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                self._call_hook(kind, hook_name, bases, impl)
        for kind, table in self._entries.items():
            for name, same in table.items():
                if len(same) > 1 and any(e.provider == BUILTIN for e in same):
                    others = ", ".join(
                        f"'{e.provider}:{name}'" for e in same if e.provider != BUILTIN
                    )
                    warnings.warn(
                        f"{kind} {name!r} is a built-in name, registered again by another "
                        f"provider: the bare name {name!r} keeps meaning the built-in; ask for "
                        f"{others} for the other",
                        PluginLoadWarning,
                        stacklevel=3,
                    )

    def _call_hook(self, kind: str, hook_name: str, bases: tuple, impl: Any) -> None:
        plugin = impl.plugin_name
        provider, version = self._providers.get(plugin, (LIVE, ""))
        found: list[type[Plugin]] = []
        try:
            returned = impl.function(*[found.append for _ in impl.argnames])
        except Exception as exc:
            self._fail(plugin, f"hook {hook_name} raised {type(exc).__name__}: {exc}")
            return
        if returned is not None:
            self._fail(plugin, f"hook {hook_name} returned {returned!r}; call register() instead")
            return
        for cls in found:
            problem = _invalid(cls, bases)
            if problem:
                self._fail(plugin, f"hook {hook_name}: {problem}", one_class=True)
                continue
            if self._is_disabled(cls.name, f"{provider}:{cls.name}", f"{plugin}:{cls.name}"):
                continue
            entry = Entry(kind, cls.name, cls, provider, version, plugin)
            same = self._entries[kind].setdefault(cls.name, [])
            same[:] = [e for e in same if e.provider != provider] + [entry]

    # ----------------------------------------------------------------- lookup

    def entries(self, kind: str | None = None) -> list[Entry]:
        """Every registered entry (of one kind, if given), sorted by kind then name."""
        kinds = [kind] if kind else list(KINDS)
        for k in kinds:
            self._check_kind(k)
        return [e for k in kinds for n in sorted(self._entries[k]) for e in self._entries[k][n]]

    def names(self, kind: str) -> list[str]:
        """Names to ask for: bare when unique (or built-in), ``provider:name`` when shared."""
        self._check_kind(kind)
        table = sorted(self._entries[kind].items())
        return [self.request_name(e) for _, same in table for e in same]

    def request_name(self, entry: Entry) -> str:
        """The name that asks for ``entry``: bare when unique among its kind or built-in,
        ``provider:name`` when other providers register the same name."""
        same = self._entries[entry.kind].get(entry.name, [])
        bare = len(same) == 1 or entry.provider == BUILTIN
        return entry.name if bare else f"{entry.provider}:{entry.name}"

    def entry(self, kind: str, name: str) -> Entry:
        """The entry of ``kind`` called ``name`` (or ``provider:name``)."""
        self._check_kind(kind)
        if not isinstance(name, str):
            raise TypeError(f"a {kind} is named by a string such as 'magnitude'; got {name!r}")
        provider, _, bare = name.rpartition(":")
        same = self._entries[kind].get(bare, [])
        if provider:
            wanted = normalise(provider)
            same = [e for e in same if wanted in (normalise(e.provider), normalise(e.plugin))]
        if not same:
            raise UnknownPluginError(
                f"no {kind} called {name!r}; available: {', '.join(self.names(kind)) or 'none'}"
            )
        if len(same) > 1 and not provider:
            same = [e for e in same if e.provider == BUILTIN] or same  # built-in names stay
        if len(same) > 1:
            options = " or ".join(f"'{e.provider}:{bare}'" for e in same)
            raise UnknownPluginError(
                f"{kind} {bare!r} is registered by several providers; ask for {options}, or "
                f"disable one with {DISABLE_ENV}"
            )
        return same[0]

    def create(self, kind: str, name: str, **params: Any) -> Plugin:
        """Make the ``kind`` plugin ``name`` with validated ``params``."""
        return self.entry(kind, name).cls(**params)

    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown plugin kind {kind!r}; kinds are: {', '.join(KINDS)}")


# --------------------------------------------------------------------------- the global registry

_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry


def reload_plugins(entry_points: bool = True, disabled: Iterable[str] | None = None) -> Registry:
    """Rebuild the process-wide registry (after installing a plugin, or in tests)."""
    global _registry
    _registry = Registry(entry_points=entry_points, disabled=disabled)
    return _registry


def register(*classes: type[Plugin]) -> None:
    """Register plugin classes live, e.g. from a notebook: ``pruneplug.register(MyScorer)``.

    Each class is registered under its kind (from its base class), with provider ``"live"``.
    Registering a class with the same name again replaces the earlier live one. Raises
    ``TypeError`` for anything that is not a valid plugin class.
    """
    registry = get_registry()
    by_kind: dict[str, list[type[Plugin]]] = {}
    for cls in classes:
        kind = getattr(cls, "kind", None)
        if kind not in KINDS:
            raise TypeError(f"cannot register: {cls!r} is not a plugin")
        problem = _invalid(cls, KINDS[kind][1])
        if problem:
            raise TypeError(f"cannot register: {problem}")
        by_kind.setdefault(kind, []).append(cls)
    for kind, group in by_kind.items():
        hook_name = KINDS[kind][0]
        plugin = type("LivePlugin", (), {hook_name: _register_all(hook_name, group)})
        registry.register_plugin(plugin(), name=f"live:{kind}:{','.join(c.name for c in group)}")


def _register_all(hook_name: str, classes: list[type[Plugin]]) -> Callable[..., None]:
    def hook(self: object, register: Callable[[type], None]) -> None:
        for cls in classes:
            register(cls)

    hook.__name__ = hook_name
    return hookspecs.hookimpl(hook)


def _not_a(kind: str, name: str, plugin: Plugin) -> TypeError:
    """The error for a registered class that made something other than its kind's base."""
    return TypeError(f"{kind} {name!r} made a {type(plugin).__name__}, not a {kind}")


def get_scorer(name: str, **params: Any) -> Scorer:
    """The scorer ``name`` with validated ``params``, e.g. ``get_scorer("magnitude", p=2)``."""
    plugin = get_registry().create("scorer", name, **params)
    if not isinstance(plugin, Scorer):  # registration checks the base; this tells the type
        raise _not_a("scorer", name, plugin)
    return plugin


def get_pruner(name: str, **params: Any) -> Pruner:
    """The pruner ``name`` with validated ``params``."""
    plugin = get_registry().create("pruner", name, **params)
    if not isinstance(plugin, Pruner):
        raise _not_a("pruner", name, plugin)
    return plugin


def get_augmenter(name: str, **params: Any) -> ImageAugmenter | TextAugmenter:
    """The augmenter ``name`` with validated ``params``."""
    plugin = get_registry().create("augmenter", name, **params)
    if not isinstance(plugin, (ImageAugmenter, TextAugmenter)):
        raise _not_a("augmenter", name, plugin)
    return plugin
