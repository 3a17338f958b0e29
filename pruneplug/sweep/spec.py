"""What a sweep is: named axes, fixed settings and a trial function, expanded into trial configs.

A **trial config** is a flat mapping from string keys to JSON values (``"scorer": "taylor"``,
``"pruner.scope": "local"``, ``"amount": 0.9``). A sweep declares

* ``fixed`` - keys every trial gets;
* ``axes`` - keys that vary: a list of values each. ``mode="grid"`` takes every combination,
  ``mode="random"`` draws ``samples`` configs, each axis independently, from its list or from a
  distribution ``{"uniform": [lo, hi]}``, ``{"loguniform": [lo, hi]}`` or
  ``{"randint": [lo, hi]}`` (inclusive), with ``random.Random(seed)``;
* ``trial`` - the function ``trial(config) -> {metric: number}``: ``"standard"`` (the built-in
  train -> score -> prune -> recover -> evaluate experiment), ``"module:function"``, or a
  callable.

Nested tables are flattened with dots (TOML's ``scorer.p = [1, 2]`` under ``[axes]`` is the axis
``"scorer.p"``). An axis value that is a table sets several keys at once, relative to the axis:
``pruner = [{name = "structured"}, {name = "unstructured", scope = "local"}]`` gives
``"pruner": "structured"`` in one trial and ``"pruner": "unstructured", "pruner.scope":
"local"`` in the other - how coupled settings are swept without impossible combinations.

A trial function may carry two optional attributes: ``defaults`` (a dict merged under every
config, so records show every setting and the hash changes when one does) and
``validate(config) -> list[str]`` (problems with one config, checked for the whole sweep before
anything runs; it may take a ``backend`` keyword, for what worker processes cannot do). The
config's identity is :func:`config_hash`: sha256 of canonical JSON (sorted keys, no whitespace)
of the trial's ``module:function`` name and the config.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import math
import pickle
import random
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from inspect import signature
from pathlib import Path
from typing import Any

Config = dict[str, Any]
Trial = Callable[[Config], Mapping[str, Any]]
#: ``trial="standard"`` names the built-in experiment.
STANDARD = "pruneplug.sweep.standard:standard_trial"
MODES = ("grid", "random")
DISTRIBUTIONS = ("uniform", "loguniform", "randint")
#: keys of the ``[sweep]`` table of a TOML file
SWEEP_KEYS = ("trial", "mode", "samples", "seed", "store")


class SweepConfigError(ValueError):
    """A sweep that cannot run as declared; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"the sweep has {len(self.problems)} problem(s); nothing ran:\n{lines}")


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no whitespace, no NaN (it would not compare equal)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(trial_name: str, config: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``{"trial": trial_name, "config": config}``."""
    text = canonical_json({"trial": trial_name, "config": dict(config)})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def trial_name(trial: Trial) -> str:
    """``module:qualname`` of a trial function (what ``"module:function"`` in TOML names)."""
    module = getattr(trial, "__module__", None) or type(trial).__module__
    qualname = getattr(trial, "__qualname__", None) or type(trial).__qualname__
    return f"{module}:{qualname}"


def resolve_trial(trial: Trial | str) -> Trial:
    """The trial function: a callable as given, ``"standard"``, or ``"module:function"``."""
    if callable(trial):
        return trial
    if not isinstance(trial, str):
        raise TypeError(f"trial must be a callable or 'module:function', got {trial!r}")
    ref = STANDARD if trial == "standard" else trial
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"trial {trial!r} is not 'module:function' (e.g. 'my_trials:run') or 'standard'"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"trial {trial!r}: cannot import {module_name!r} ({exc})") from exc
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"trial {trial!r}: module {module_name!r} has no {attr!r}")
    if not callable(target):
        raise ValueError(f"trial {trial!r} is not callable")
    return target


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"scorer": {"p": 2}}`` -> ``{"scorer.p": 2}``; distributions stay whole."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not is_distribution(value):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def spelled_twice(table: Mapping[str, Any]) -> list[str]:
    """The keys :func:`flatten` would meet twice (``"scorer.p" = 1`` beside ``scorer = {p = 2}``
    is valid TOML): flattening would keep one of them silently."""
    names: list[str] = []

    def walk(part: Mapping[str, Any], prefix: str) -> None:
        for key, value in part.items():
            if isinstance(value, Mapping) and not is_distribution(value):
                walk(value, f"{prefix}{key}.")
            else:
                names.append(f"{prefix}{key}")

    walk(table, "")
    return sorted({name for name in names if names.count(name) > 1})


def is_distribution(value: Any) -> bool:
    """Whether an axis is a random distribution such as ``{"uniform": [0.5, 0.99]}``."""
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS


def expand_value(axis: str, value: Any) -> dict[str, Any]:
    """The keys one axis value sets: itself, or a table's keys relative to the axis."""
    if not isinstance(value, Mapping):
        return {axis: value}
    out = {axis if k == "name" else f"{axis}.{k}": v for k, v in flatten(value).items()}
    return out


def _json_problem(where: str, value: Any) -> str | None:
    try:
        canonical_json(value)
    except (TypeError, ValueError) as exc:
        return f"{where}: {value!r} is not a JSON value ({exc}); use str, int, float, bool, lists"
    return None


@dataclass
class Sweep:
    """A grid or random sample over named axes, run by :meth:`run` (see the module docstring).

    Args:
        trial: ``"standard"``, ``"module:function"`` or a callable ``trial(config) -> metrics``.
        axes: key -> list of values (or a distribution in random mode).
        fixed: key -> value, the same in every trial.
        mode: ``"grid"`` (every combination) or ``"random"`` (``samples`` draws).
        samples: number of random draws (random mode); duplicates are run once.
        seed: seed of the random draws (random mode); trials have their own ``seed`` key.
        store: results file (JSON Lines); ``run`` may override it.
    """

    trial: Trial | str = "standard"
    axes: Mapping[str, Any] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    mode: str = "grid"
    samples: int | None = None
    seed: int = 0
    store: str | Path | None = None

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], base: Path | None = None) -> Sweep:
        """A sweep from ``{"sweep": {...}, "fixed": {...}, "axes": {...}}`` (a TOML file's shape).

        A relative ``store`` is taken relative to ``base`` (the config file's folder).
        """
        unknown = sorted(set(table) - {"sweep", "fixed", "axes"})
        problems = [
            f"unknown table [{k}]; the tables are [sweep], [fixed], [axes]" for k in unknown
        ]
        problems += [
            f"{k} = {table[k]!r} is not a table: write [{k}] and its keys below it"
            for k in ("sweep", "fixed", "axes")
            if not isinstance(table.get(k, {}), Mapping)
        ]
        if problems:
            raise SweepConfigError(problems)
        head = dict(table.get("sweep", {}))
        problems += [
            f"unknown key {k!r} in [sweep]; it takes {', '.join(SWEEP_KEYS)}"
            for k in sorted(set(head) - set(SWEEP_KEYS))
        ]
        if problems:
            raise SweepConfigError(problems)
        store = head.get("store")
        if store is not None and base is not None and not Path(store).is_absolute():
            store = base / store
        return cls(
            trial=head.get("trial", "standard"),
            axes=dict(table.get("axes", {})),
            fixed=dict(table.get("fixed", {})),
            mode=head.get("mode", "grid"),
            samples=head.get("samples"),
            seed=head.get("seed", 0),
            store=store,
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> Sweep:
        """Read a sweep from a TOML file (Python 3.11+, or 3.10 with ``pip install tomli``)."""
        path = Path(path)
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - exercised only on 3.10
            try:
                import tomli as tomllib
            except ImportError as exc:
                raise RuntimeError(
                    "reading TOML sweep files on Python 3.10 needs `pip install tomli` (3.11+ "
                    "reads TOML itself); or build the sweep in Python with Sweep(...)"
                ) from exc
        try:
            with path.open("rb") as file:
                table = tomllib.load(file)
        except FileNotFoundError as exc:
            raise SweepConfigError([f"no sweep file {str(path)!r}"]) from exc
        except OSError as exc:  # a folder, no permission
            raise SweepConfigError([f"cannot read the sweep file {str(path)!r}: {exc}"]) from exc
        except tomllib.TOMLDecodeError as exc:
            raise SweepConfigError([f"{path}: not valid TOML: {exc}"]) from exc
        return cls.from_dict(table, base=path.parent)

    # ----------------------------------------------------------------- expansion

    def _structure_problems(self) -> list[str]:
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode={self.mode!r}: use 'grid' or 'random'")
        if self.mode == "random" and (
            isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1
        ):
            problems.append(
                f"random mode needs samples = a whole number >= 1, got {self.samples!r}"
            )
        if self.mode == "grid" and self.samples is not None:
            problems.append("samples is for mode='random'; a grid runs every combination")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            problems.append(f"seed={self.seed!r}: give a whole number")
        if self.store is not None and Path(self.store).is_dir():
            problems.append(f"store={str(self.store)!r} is a folder: name a file in it")
        for where, table in (("fixed", self.fixed), ("axes", self.axes)):
            for key in spelled_twice(table):
                problems.append(f"{where} sets {key!r} twice (dotted and as a table); keep one")
        fixed, axes = flatten(self.fixed), flatten(self.axes)
        for key in sorted(set(fixed) & set(axes)):
            problems.append(f"{key!r} is both fixed and an axis; keep one")
        for key, value in fixed.items():
            problems.append(_json_problem(f"fixed {key!r}", value) or "")
        for key, values in axes.items():
            if is_distribution(values):
                ((kind, bounds),) = values.items()
                ok = (
                    isinstance(bounds, list)
                    and len(bounds) == 2
                    and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                    and bounds[0] <= bounds[1]
                    and (kind != "loguniform" or bounds[0] > 0)
                    and (kind != "randint" or all(isinstance(b, int) for b in bounds))
                )
                if not ok:
                    problems.append(f"axis {key!r}: {kind} needs [low, high] with low <= high")
                if self.mode == "grid":
                    problems.append(
                        f"axis {key!r} is a {kind} distribution, which only mode='random' can "
                        "draw from; give a list of values for a grid"
                    )
            elif not isinstance(values, list) or not values:
                problems.append(f"axis {key!r} must be a non-empty list of values, got {values!r}")
            else:
                problems.append(_json_problem(f"axis {key!r}", values) or "")
                if any(isinstance(v, Mapping) and not v for v in values):
                    problems.append(f"axis {key!r} has an empty table {{}}, which sets nothing")
                numbers = [
                    v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
                ]
                same = next(  # 1 and 1.0: equal, but hashed as two configs
                    (
                        (a, b)
                        for i, a in enumerate(numbers)
                        for b in numbers[i + 1 :]
                        if a == b and type(a) is not type(b)
                    ),
                    None,
                )
                if same is not None:
                    a, b = same
                    problems.append(
                        f"axis {key!r} has {a!r} and {b!r}, one number spelled two ways, which "
                        "would run as two trials: keep one"
                    )
        return [p for p in problems if p]

    def _draw(self, rng: random.Random, values: Any) -> Any:
        if not is_distribution(values):
            return rng.choice(values)
        ((kind, (low, high)),) = values.items()
        if kind == "uniform":
            return rng.uniform(low, high)
        if kind == "loguniform":
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        return rng.randint(low, high)

    def configs(self, trial: Trial | None = None) -> list[Config]:
        """Every trial config (trial defaults, then fixed keys, then axis values), deduplicated.

        Raises :class:`SweepConfigError` when the declaration itself is malformed.
        """
        problems = self._structure_problems()
        if problems:
            raise SweepConfigError(problems)
        trial = resolve_trial(self.trial) if trial is None else trial
        fixed_keys = set(flatten(self.fixed))
        base = {**getattr(trial, "defaults", {}), **flatten(self.fixed)}
        axes = flatten(self.axes)
        names = sorted(axes)
        choices: Iterable[Sequence[Any]]
        if self.mode == "grid":
            choices = itertools.product(*(axes[n] for n in names))
        else:
            rng = random.Random(self.seed)
            draws = [[self._draw(rng, axes[n]) for n in names] for _ in range(self.samples or 0)]
            choices = iter(draws)
        out: dict[str, Config] = {}
        clashes: dict[str, None] = {}  # ordered and once each
        for combo in choices:
            config = dict(base)
            set_by: dict[str, str] = {}
            for name, value in zip(names, combo, strict=True):
                for key, setting in expand_value(name, value).items():
                    other = set_by.get(key)
                    if other is not None and other != name:
                        clashes[f"axes {other!r} and {name!r} both set {key!r}; keep one"] = None
                    elif key in fixed_keys:
                        clashes[f"{key!r} is fixed and set by axis {name!r}; keep one"] = None
                    set_by[key] = name
                    config[key] = setting
            out.setdefault(canonical_json(config), config)
        if clashes:
            raise SweepConfigError(list(clashes))
        return list(out.values())

    def plan(self, backend: str = "inprocess") -> tuple[Trial, str, list[Config]]:
        """Resolve and validate everything before anything runs: ``(trial, name, configs)``.

        Collects every problem - the declaration, the trial reference, each config (the trial's
        ``validate``: unknown plugin names, bad parameters, impossible combinations), and what
        worker processes cannot do (a lambda, a plugin registered live) - into one
        :class:`SweepConfigError`.
        """
        problems = self._structure_problems()
        try:
            trial = resolve_trial(self.trial)
        except (TypeError, ValueError) as exc:
            problems.append(str(exc))
            raise SweepConfigError(problems) from None
        if problems:
            raise SweepConfigError(problems)
        if backend != "inprocess" and not isinstance(self.trial, str):
            main = sys.modules.get("__main__")
            if getattr(trial, "__module__", None) == "__main__" and not hasattr(main, "__file__"):
                problems.append(
                    f"trial {trial_name(trial)} is defined in a notebook or an interactive "
                    "session, which worker processes cannot import; move it into a module "
                    "(a .py file next to the notebook), or use backend='inprocess'"
                )
            try:
                pickle.dumps(trial)
            except Exception as exc:
                problems.append(
                    f"trial {trial_name(trial)} cannot be sent to worker processes ({exc}); "
                    "define it at module level of an importable module, or use "
                    "backend='inprocess'"
                )
        configs = self.configs(trial)
        check = getattr(trial, "validate", None)
        extra = {"backend": backend} if check and "backend" in signature(check).parameters else {}
        counts: dict[str, int] = {}
        if check is not None:
            for config in configs:
                for problem in check(config, **extra):
                    counts[problem] = counts.get(problem, 0) + 1
        for problem, n in counts.items():
            problems.append(
                problem if n == len(configs) else f"{problem} ({n} of {len(configs)} trials)"
            )
        if problems:
            raise SweepConfigError(problems)
        return trial, trial_name(trial), configs
