"""The built-in trial: train a dense model on digits, score, prune, recover, evaluate.

``standard_trial(config)`` is a pure function of its config (the dense model it starts from is
cached per process, keyed by everything that determines it, so a sweep over scorers or amounts
trains each dense model once per worker). Keys, with :data:`DEFAULTS`:

* ``model`` (``"mlp"``, ``"cnn"`` or a torchvision classifier) and ``model.<kwarg>`` for
  :func:`pruneplug.models.build`; ``epochs``, ``lr``, ``batch_size``: dense training;
* ``scorer`` / ``pruner`` and ``scorer.<param>`` / ``pruner.<param>``: plugin names and their
  declared parameters; ``amount``: final sparsity (fraction of weights or units removed);
* ``schedule``: ``"one_shot"``, ``"iterative"`` (``schedule.rounds``,
  ``schedule.epochs_per_round``, ``schedule.spacing``, ``schedule.lr``) or ``"gradual"``
  (``schedule.epochs``, ``schedule.steps``, ``schedule.every``, ``schedule.initial``,
  ``schedule.lr``), see :mod:`pruneplug.schedules`;
* ``recovery``: ``"none"``, ``"fine_tune"`` or ``"distill"`` (from the dense model), with
  ``recovery.epochs``, ``recovery.lr`` and for distillation ``recovery.temperature`` and
  ``recovery.weight``;
* ``augmenter`` (``"none"`` or an image augmenter) and ``augmenter.<param>``: augments every
  batch of the recovery training (adversarial ones attack the pruned model), seeded by ``seed``;
* ``seed``: model initialisation, data order, augmentation; ``latency``: also time the pruned
  model (``latency_ms``, batch of one).

Metrics: ``accuracy`` and ``dense_accuracy`` (digits test split), ``sparsity`` (global weight
sparsity), ``parameters`` / ``nonzero`` / ``macs`` of the pruned model and ``dense_parameters`` /
``dense_macs``, and ``latency_ms`` when asked.
"""

from __future__ import annotations

import difflib
import functools
import json
from typing import Any

import torch
from torch import nn

from .. import data, engine, metrics, models, recovery, schedules
from ..contracts import ImageAugmenter, Pruner, TextAugmenter
from ..registry import (
    LIVE,
    UnknownPluginError,
    get_augmenter,
    get_pruner,
    get_registry,
    get_scorer,
)
from .spec import Config

DEFAULTS: dict[str, Any] = {
    "model": "mlp",
    "epochs": 3,
    "lr": 0.05,
    "batch_size": 64,
    "scorer": "magnitude",
    "pruner": "unstructured",
    "amount": 0.5,
    "schedule": "one_shot",
    "recovery": "fine_tune",
    "augmenter": "none",
    "seed": 0,
    "latency": False,
}
#: the sub-keys each schedule and recovery takes
SCHEDULE_PARAMS = {
    "one_shot": (),
    "iterative": ("rounds", "epochs_per_round", "spacing", "lr"),
    "gradual": ("epochs", "steps", "every", "initial", "lr"),
}
RECOVERY_PARAMS = {
    "none": (),
    "fine_tune": ("epochs", "lr"),
    "distill": ("epochs", "lr", "temperature", "weight"),
}
#: numeric sub-parameters of schedules and recoveries -> (type, lowest value, lowest excluded),
#: checked before anything trains (they would otherwise fail every trial after its dense run)
SUB_NUMBERS: dict[str, tuple[type, float, bool]] = {
    "rounds": (int, 1, False),
    "epochs_per_round": (int, 0, False),
    "epochs": (int, 1, False),
    "steps": (int, 1, False),
    "every": (int, 1, False),
    "initial": (float, 0, False),
    "lr": (float, 0, True),
    "temperature": (float, 0, True),
    "weight": (float, 0, False),
}
#: prefixes whose sub-keys go to a builder or a plugin
PREFIXES = ("model", "scorer", "pruner", "augmenter", "schedule", "recovery")


def params(config: Config, prefix: str) -> dict[str, Any]:
    """``{"scorer.p": 2}`` -> ``{"p": 2}`` for ``prefix="scorer"``."""
    start = f"{prefix}."
    return {k[len(start) :]: v for k, v in config.items() if k.startswith(start)}


def _number(config: Config, key: str, kind: type, low: float, strict: bool = False) -> str | None:
    value = config.get(key)
    ok_type = isinstance(value, (int, float)) and (kind is float or isinstance(value, int))
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not ok_type
        or value < low
        or (strict and value == low)
    ):
        bound = f"> {low}" if strict else f">= {low}"
        return f"{key}={value!r}: give {'a number' if kind is float else 'a whole number'} {bound}"
    return None


def _plugin_problems(config: Config, kind: str, backend: str) -> list[str]:
    """Create the plugin named in ``config[kind]`` (this validates its parameters)."""
    name = config.get(kind)
    if not isinstance(name, str):
        return [f"{kind}={name!r}: give the name of a registered {kind}"]
    registry = get_registry()
    try:
        entry = registry.entry(kind, name)
        plugin = entry.cls(**params(config, kind))
    except (UnknownPluginError, TypeError, ValueError) as exc:
        return [f"{kind}: {exc}"]
    problems = []
    if entry.provider == LIVE and backend != "inprocess":
        problems.append(
            f"{kind} {name!r} is registered live in this process, so {backend} workers do not "
            "have it: use backend='inprocess', or install it as an entry-point plugin"
        )
    if isinstance(plugin, TextAugmenter):
        problems.append(f"augmenter {name!r} augments text; the standard trial trains on images")
    if isinstance(plugin, Pruner) and not plugin.takes_amount:
        problems.append(
            f"pruner {name!r} removes what its own parameters say, but the standard trial "
            "prunes to amount: use a pruner that takes an amount (unstructured, structured)"
        )
    return problems


@functools.lru_cache(maxsize=16)
def _model_problem(spec: str) -> str | None:
    name, kwargs = json.loads(spec)
    try:
        models.build(name, **kwargs)
    except (TypeError, ValueError) as exc:
        return f"model: {exc}"
    return None


def validate(config: Config, backend: str = "inprocess") -> list[str]:
    """Every problem of one config, with the plugins' own messages (empty: it can run)."""
    problems = []
    for key in config:
        head = key.split(".", 1)[0]
        if key not in DEFAULTS and not (head in PREFIXES and "." in key):
            close = difflib.get_close_matches(key, [*DEFAULTS, *PREFIXES], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"unknown key {key!r}{hint} (the standard trial's keys: see its docs)")
    spec = json.dumps([config.get("model"), params(config, "model")], sort_keys=True)
    problems.append(_model_problem(spec) or "")
    problems += [
        _number(config, "epochs", int, 1) or "",
        _number(config, "batch_size", int, 1) or "",
        _number(config, "seed", int, 0) or "",
        _number(config, "lr", float, 0, strict=True) or "",
    ]
    amount = config.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < 1:
        problems.append(f"amount={amount!r}: give a fraction in [0, 1)")
    for kind in ("scorer", "pruner"):
        problems += _plugin_problems(config, kind, backend)
    if config.get("augmenter") != "none":
        problems += _plugin_problems(config, "augmenter", backend)
        if config.get("recovery") == "none":
            problems.append("an augmenter augments the recovery training, but recovery = 'none'")
    elif params(config, "augmenter"):
        problems.append("augmenter parameters are set but augmenter = 'none'")
    for key, table in (("schedule", SCHEDULE_PARAMS), ("recovery", RECOVERY_PARAMS)):
        value = config.get(key)
        if value not in table:
            problems.append(f"{key}={value!r}: choose one of {', '.join(map(repr, table))}")
            continue
        for sub in sorted(set(params(config, key)) - set(table[value])):
            takes = ", ".join(table[value]) or "no parameters"
            problems.append(f"{key} {value!r} has no parameter {sub!r}; it takes {takes}")
        for sub in sorted(set(params(config, key)) & set(SUB_NUMBERS)):
            number, low, strict = SUB_NUMBERS[sub]
            problems.append(_number(config, f"{key}.{sub}", number, low, strict) or "")
    if config.get("schedule") == "gradual":
        problems += _gradual_problems(config)
    if not isinstance(config.get("latency"), bool):
        problems.append(f"latency={config.get('latency')!r}: give true or false")
    return [p for p in problems if p]


def _gradual_problems(config: Config) -> list[str]:
    problems = []
    name = config.get("pruner")
    try:  # a missing or unknown pruner is already reported by _plugin_problems
        pruner = get_registry().entry("pruner", name).cls if isinstance(name, str) else None
    except UnknownPluginError:
        pruner = None
    if pruner is not None and issubclass(pruner, Pruner) and pruner.structured:
        problems.append(
            f"schedule 'gradual' needs a mask (unstructured) pruner, but "
            f"{name!r} is structured: use schedule 'iterative' or 'one_shot'"
        )
    sub = {"epochs": 10, "steps": 5, "every": 1, **params(config, "schedule")}
    if all(isinstance(sub[k], int) for k in ("epochs", "steps", "every")) and (
        (sub["steps"] - 1) * sub["every"] >= sub["epochs"]
    ):
        problems.append(
            f"schedule 'gradual' with steps={sub['steps']}, every={sub['every']} prunes last "
            f"after epoch {(sub['steps'] - 1) * sub['every']}, leaving none of its "
            f"{sub['epochs']} epochs at the final sparsity: fewer steps or more epochs"
        )
    return problems


@functools.lru_cache(maxsize=4)
def _dense(spec: str) -> tuple[nn.Module, float]:
    """The dense model trained as ``spec`` says, and its test accuracy (cached per process)."""
    name, kwargs, seed, epochs, lr, batch_size = json.loads(spec)
    digits = data.load_digits(seed=0)
    model = models.build(name, seed=seed, **kwargs)
    engine.train(
        model, digits.train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=False
    )
    return model, engine.evaluate(model, digits.test)["accuracy"]


def standard_trial(config: Config) -> dict[str, Any]:
    """Train dense -> score -> prune (with a schedule) -> recover -> evaluate; the metrics."""
    config = {**DEFAULTS, **config}
    seed = config["seed"]
    spec = [config["model"], params(config, "model"), seed, config["epochs"], config["lr"]]
    dense, dense_accuracy = _dense(json.dumps([*spec, config["batch_size"]], sort_keys=True))
    digits = data.load_digits(seed=0)
    example = digits.test[:1][0]
    scorer = get_scorer(config["scorer"], **params(config, "scorer"))
    pruner = get_pruner(config["pruner"], **params(config, "pruner"))
    train_kwargs: dict[str, Any] = {"batch_size": config["batch_size"], "seed": seed}
    amount, schedule = config["amount"], config["schedule"]
    if schedule == "one_shot":
        model = schedules.one_shot(dense, scorer, pruner, amount, data=digits.train)
    else:
        run = schedules.iterative if schedule == "iterative" else schedules.gradual
        sched = {"lr": 0.01, **params(config, "schedule"), **train_kwargs}
        model = run(dense, scorer, pruner, amount, data=digits.train, progress=False, **sched).model
    if config["augmenter"] != "none":
        augmenter = get_augmenter(config["augmenter"], **params(config, "augmenter"))
        if not isinstance(augmenter, ImageAugmenter):
            raise ValueError(
                f"augmenter {config['augmenter']!r} augments text; the standard trial trains "
                "on images: choose an image augmenter"
            )
        generator = torch.Generator().manual_seed(seed)
        extra = {"model": model} if augmenter.needs_model else {}  # adversarial: attack it

        def augment(inputs: torch.Tensor, targets: torch.Tensor) -> Any:
            return augmenter(inputs, targets, generator=generator, **extra)

        train_kwargs["augment"] = augment
    kind, rec = config["recovery"], {"epochs": 2, "lr": 0.01, **params(config, "recovery")}
    if kind == "fine_tune":
        engine.fine_tune(model, digits.train, progress=False, **rec, **train_kwargs)
    elif kind == "distill":
        recovery.distill(model, dense, digits.train, progress=False, **rec, **train_kwargs)
    counts = metrics.count_parameters(model)
    result = {
        "accuracy": engine.evaluate(model, digits.test)["accuracy"],
        "dense_accuracy": dense_accuracy,
        "sparsity": metrics.global_sparsity(model),
        "parameters": counts["total"],
        "nonzero": counts["nonzero"],
        "macs": metrics.macs(model, example),
        "dense_parameters": metrics.count_parameters(dense)["total"],
        "dense_macs": metrics.macs(dense, example),
    }
    if config["latency"]:
        result["latency_ms"] = 1000 * metrics.latency(model, example)
    return result


# a trial function carries its defaults and its validator as attributes (what
# pruneplug.sweep.spec reads with getattr); mypy has no type for a function with attributes
standard_trial.defaults = DEFAULTS  # type: ignore[attr-defined]
standard_trial.validate = validate  # type: ignore[attr-defined]
