"""Conformance kit: check a scorer, pruner or augmenter against pruneplug's plugin contract.

Plugin authors call it from their own tests, so they learn what they got wrong before their
users do::

    from pruneplug.testing import check_plugin

    def test_my_scorer_follows_the_contract():
        check_plugin(MyScorer)

pruneplug's own suite runs it over every registered plugin with :func:`parametrize_plugins`.

Every check is a named **rule** (listed in :data:`RULES`, with what it asks and how to fix it).
A broken rule raises :class:`ConformanceError`, an ``AssertionError`` naming the plugin, the rule,
what was seen and the fix. A rule a plugin knowingly does not follow can be skipped by name
(``check_plugin(MyAug, skip={"image.per_sample"})``); an unknown name in ``skip`` is an error.

The checks run on tiny inputs - a 1 x 8 x 8 MLP and conv net with batch norm, six 3 x 16 x 16
images, a few sentences - so one plugin takes well under a second, and the states of torch's
and Python's random generators are restored afterwards.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from .contracts import (
    ImageAugmenter,
    Plugin,
    Pruner,
    Scorer,
    Scores,
    TextAugmenter,
    prunable_layers,
)
from .params import Param, ParamError
from .registry import _NAME, Entry, Registry, get_registry


@dataclass(frozen=True)
class Rule:
    """One rule of the contract: what it asks, and how a plugin that breaks it is fixed."""

    what: str
    fix: str


RULES: dict[str, Rule] = {
    "declaration.base": Rule(
        "the class derives from pruneplug.Scorer, Pruner, ImageAugmenter or TextAugmenter",
        "subclass one of them and implement its one method (score, prune, apply, augment_one)",
    ),
    "declaration.name": Rule(
        "name is an identifier-like string (letters, digits, '_' and '-')",
        "set a class attribute such as name = 'my_method'",
    ),
    "declaration.description": Rule(
        "description is one non-empty line",
        "set description = '...' (one line; put the details in the docstring)",
    ),
    "declaration.params": Rule(
        "params is a tuple of pruneplug.Param with unique names, each with a one-line help",
        "declare params = (Param('alpha', float, 0.5, low=0, high=1, help='what it does'),)",
    ),
    "declaration.json": Rule(
        "the parameter declarations serialise to strict JSON (for the CLI and the widgets)",
        "use None for an unbounded side instead of inf, and finite numbers elsewhere",
    ),
    "params.defaults": Rule(
        "the class can be made without arguments, and self.config holds every declared "
        "parameter with its default",
        "make every default valid and let Plugin.__init__ fill self.config: call "
        "super().__init__(**params) first in your own __init__",
    ),
    "params.rejected": Rule(
        "a wrong type, an out-of-range value, a value outside the choices and an undeclared "
        "keyword each raise pruneplug.ParamError naming the parameter",
        "pass every keyword on to super().__init__(**params), unchanged, and never catch its "
        "ParamError; raise ParamError yourself for checks across parameters",
    ),
    "runs": Rule(
        "the plugin runs on a small valid input and returns what its contract says",
        "call the plugin yourself on the input shown in the problem and follow the traceback",
    ),
    "inputs_untouched": Rule(
        "the arguments are not modified in place (images, targets, texts, batches, scores, and "
        "the model given to a structured pruner)",
        "use out-of-place operations (x = x * 2, not x.mul_(2)), .clone() tensors before "
        "writing into them, and prune a copy.deepcopy(model) in structured pruners",
    ),
    "model_untouched": Rule(
        "the model keeps its parameters, buffers (batch-norm statistics), train/eval modes, "
        "requires_grad flags and hooks",
        "run forward passes under model.eval() and restore each module's mode afterwards, "
        "compute under torch.no_grad() where no gradient is needed, remove every hook you add",
    ),
    "deterministic": Rule(
        "the same torch seed gives the same result",
        "draw randomness only from torch's generator (seeded by torch.manual_seed), not from "
        "Python's random or numpy, and avoid order-dependent set/dict iteration",
    ),
    "scores.shapes": Rule(
        "Scores name prunable layers of the model (pruneplug.prunable_layers); weight scores "
        "have the layer weight's shape, unit scores one entry per output unit; at least one "
        "layer is scored",
        "key the Scores tables by the names from prunable_layers(model) and build each tensor "
        "from that layer's weight (like it, or of length weight.shape[0])",
    ),
    "scores.values": Rule(
        "scores are finite floating-point tensors on the weight's device, detached from autograd",
        "compute under torch.no_grad() or .detach() the result, and guard divisions and logs "
        "against zero",
    ),
    "pruner.bad_call": Rule(
        "a bad call (amount outside [0, 1), amount and threshold together, NaN scores) raises "
        "ValueError or TypeError and leaves the model unchanged",
        "do not override Pruner.__call__: it checks amount, threshold and scores before prune()",
    ),
    "pruner.respects_scores": Rule(
        "higher scores mean keep: the weights removed score lower on average than those kept",
        "remove the lowest-scored weights (scores.weight[name].topk(k, largest=False))",
    ),
    "unstructured.masks": Rule(
        "pruned layers follow PyTorch's mask convention: a weight_orig parameter, a weight_mask "
        "buffer, weight == weight_orig * weight_mask, prune.is_pruned(model) is true, and "
        "prune.remove(layer, 'weight') makes the zeros permanent without changing the outputs",
        "apply each mask with torch.nn.utils.prune.custom_from_mask(layer, 'weight', mask) "
        "instead of writing zeros into the weights",
    ),
    "unstructured.sparsity": Rule(
        "amount=a leaves a fraction a of the scored weights at zero (amount=0 removes nothing) "
        "and threshold=t removes exactly the weights scored below t",
        "remove round(amount * n) weights (n: per layer or all scored weights) and, for a "
        "threshold, every weight with score < t",
    ),
    "unstructured.compose": Rule(
        "pruning a pruned model keeps the weights already removed (masks multiply)",
        "apply new masks with prune.custom_from_mask, which multiplies them with the existing "
        "one, instead of overwriting weight_mask",
    ),
    "structured.smaller": Rule(
        "amount=0.5 returns a model with fewer parameters and no pruning masks; amount=0 keeps "
        "every parameter",
        "remove the lowest-scored units from the layers (and their coupled layers) instead of "
        "masking them, and remove nothing for amount=0",
    ),
    "structured.consistent": Rule(
        "in the pruned model every layer's attributes agree with its tensors (in/out features "
        "and channels, batch-norm num_features and statistics), and forward runs and returns "
        "the original output shape",
        "shrink coupled layers together: ask torch_pruning.DependencyGraph for the groups "
        "(see pruneplug_plugins.structured)",
    ),
    "image.shape": Rule(
        "the output has the input's shape, dtype and device (for N x C x H x W batches and for "
        "one C x H x W image)",
        "build the output from the input with ops that keep dtype and device, e.g. "
        "torch.zeros_like(images) or x.to(images)",
    ),
    "image.range": Rule(
        "output values are finite and stay in [0, 1]",
        "clamp the result (out.clamp(0, 1)) and avoid divisions by zero",
    ),
    "image.per_sample": Rule(
        "generate_parameters returns a dict of tensors with one entry per sample (first "
        "dimension N), and each sample's output depends only on its own image and parameters",
        "draw tensors of shape (N, ...) with the generator and apply them batched, with no "
        "batch-level random choice and no statistic taken over the batch",
    ),
    "image.p": Rule(
        "with p=0 every image comes back unchanged",
        "leave the per-sample decision to the base class (do not override __call__ or "
        "transform); it restores the samples params['applied'] leaves out",
    ),
    "image.targets": Rule(
        "an augmenter that does not mix targets returns the targets it was given, unchanged",
        "return (images, None) from apply, or set mixes_targets = True if the targets change",
    ),
    "mixing.targets": Rule(
        "an augmenter that mixes targets returns soft targets N x classes: non-negative rows "
        "summing to 1",
        "mix one-hot (or soft) targets with the same weights as the images: "
        "lam * y + (1 - lam) * y[perm]",
    ),
    "generator": Rule(
        "the same generator seed gives the same output, whatever the global random state: all "
        "randomness comes from the generator passed in",
        "draw every random number with generator=generator (torch.rand(..., generator=g), "
        "torch.randint, torch.randperm); never use Python's random, numpy.random or torch's "
        "global RNG",
    ),
    "text.output": Rule(
        "a text augmenter returns a list of non-empty strings, one per input text",
        "return a str from augment_one and keep at least one word of every text",
    ),
}


class ConformanceError(AssertionError):
    """A plugin broke a rule of the contract. Attributes: ``plugin``, ``rule``, ``problem``,
    ``fix``; the message says all four."""

    def __init__(self, plugin: str, rule: str, problem: str) -> None:
        self.plugin, self.rule, self.problem, self.fix = plugin, rule, problem, RULES[rule].fix
        super().__init__(
            f"{plugin} breaks rule {rule!r} ({RULES[rule].what}):\n"
            f"  problem: {problem}\n  how to fix: {self.fix}"
        )


class _Check:
    """Reports rule breaks of one plugin, honouring the rules to skip."""

    def __init__(self, cls: type, skip: Iterable[str]) -> None:
        self.skip = set(skip)
        unknown = sorted(self.skip - set(RULES))
        if unknown:
            raise ValueError(
                f"skip names unknown rule(s) {', '.join(unknown)}; the rules are: "
                f"{', '.join(RULES)}"
            )
        kind = getattr(cls, "kind", "") or "plugin"
        self.label = f"{kind} {getattr(cls, 'name', '')!r} ({cls.__module__}.{cls.__qualname__})"

    def fail(self, rule: str, problem: str) -> None:
        if rule not in self.skip:
            raise ConformanceError(self.label, rule, problem)

    def call(self, rule: str, doing: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run plugin code; an exception it raises becomes a break of ``rule``."""
        try:
            return fn(*args, **kw)
        except ConformanceError:
            raise
        except Exception as error:
            raise ConformanceError(
                self.label, rule, f"{doing} raised {type(error).__name__}: {error}"
            ) from error


@contextmanager
def _isolated_rng(seed: int) -> Iterator[None]:
    """Seed torch, random and numpy for the checks, and restore their states afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _reseed_globals(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


# --------------------------------------------------------------------------- tiny models and data


def tiny_mlp() -> nn.Sequential:
    """A 64-16-12-10 MLP (Flatten first) for 1 x 8 x 8 inputs; initialised from torch's RNG."""
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(64, 16),
            relu1=nn.ReLU(),
            fc2=nn.Linear(16, 12),
            relu2=nn.ReLU(),
            fc3=nn.Linear(12, 10),
        )
    )


def tiny_cnn() -> nn.Sequential:
    """Two Conv-BN-ReLU blocks (4 and 6 channels), pooling to 2 x 2 and a Linear classifier,
    for 1 x 8 x 8 inputs. Batch-norm affine parameters and statistics are randomised, so
    scorers that read them see distinct values."""
    model = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 4, 3, padding=1),
            bn1=nn.BatchNorm2d(4),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(4, 6, 3, padding=1),
            bn2=nn.BatchNorm2d(6),
            relu2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(2),
            flatten=nn.Flatten(),
            fc=nn.Linear(24, 10),
        )
    )
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.1)
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return model


def _batches(example: Tensor, classes: int) -> list[tuple[Tensor, Tensor]]:
    """Two batches shaped like ``example`` with random class targets."""
    return [
        (torch.rand_like(example), torch.randint(0, classes, (len(example),))) for _ in range(2)
    ]


def _images(n: int = 6, shape: tuple[int, ...] = (3, 16, 16)) -> Tensor:
    """Random images in [0, 1], about 8 % of the pixels exactly 0 and 8 % exactly 1."""
    return (torch.rand(n, *shape) * 1.2 - 0.1).clamp(0, 1)


TEXTS = (
    "the film was not good at all",
    "a truly wonderful and moving story about two brothers",
    "I loved the acting but the plot was thin",
    "great",
)


def _attack_model(images: Tensor, classes: int) -> nn.Module:
    """A small classifier for ``images`` (with batch norm, in training mode)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(images[0].numel(), 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, classes),
    )


# --------------------------------------------------------------------------- model helpers


@dataclass
class _Snapshot:
    state: dict[str, Tensor]
    modes: dict[str, bool]
    grad_flags: dict[str, bool]
    hooks: dict[str, tuple[int, ...]]


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _snapshot(model: nn.Module) -> _Snapshot:
    return _Snapshot(
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        {n: m.training for n, m in model.named_modules()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        {n: tuple(len(getattr(m, h, {})) for h in _HOOK_DICTS) for n, m in model.named_modules()},
    )


def _changes(before: _Snapshot, model: nn.Module) -> str | None:
    """Say how ``model`` differs from ``before``, or ``None``."""
    after = _snapshot(model)
    if before.state.keys() != after.state.keys():
        added = sorted(after.state.keys() - before.state.keys())
        gone = sorted(before.state.keys() - after.state.keys())
        return f"state_dict entries added {added} / removed {gone}"
    for key, value in before.state.items():
        new = after.state[key]
        if value.shape != new.shape:
            return f"{key!r} changed shape from {tuple(value.shape)} to {tuple(new.shape)}"
        if not torch.equal(value, new):
            return f"{key!r} changed value"
    for table, what in ((before.modes, "training mode"), (before.grad_flags, "requires_grad")):
        new_table = after.modes if table is before.modes else after.grad_flags
        for name, flag in table.items():
            if new_table.get(name) != flag:
                return f"{what} of {name or 'the model'!r} changed from {flag} to {not flag}"
    for name, counts in before.hooks.items():
        if after.hooks.get(name) != counts:
            now = after.hooks.get(name)
            return f"hooks of module {name or 'the model'!r} changed: {counts} -> {now}"
    return None


def _eval_forward(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)`` in eval mode without gradients; every module's mode is restored."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for module, mode in modes:
            module.training = mode


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _inconsistent(model: nn.Module) -> str | None:
    """Say which layer's attributes disagree with its tensors, or ``None``."""
    for name, m in model.named_modules():
        checks: list[tuple[str, int, int]] = []
        if isinstance(m, nn.Linear):
            checks = [("out_features", m.out_features, m.weight.shape[0])]
            checks += [("in_features", m.in_features, m.weight.shape[1])]
        elif isinstance(m, nn.modules.conv._ConvNd):
            checks = [("out_channels", m.out_channels, m.weight.shape[0])]
            checks += [("in_channels", m.in_channels, m.weight.shape[1] * m.groups)]
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            checks = [
                (f"{t} length", m.num_features, len(getattr(m, t)))
                for t in ("weight", "bias", "running_mean", "running_var")
                if getattr(m, t, None) is not None
            ]
        bias = getattr(m, "bias", None)
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and bias is not None:
            checks.append(("bias length", m.weight.shape[0], len(bias)))
        for what, declared, actual in checks:
            if declared != actual:
                return f"layer {name!r}: {what} is {actual} but the layer says {declared}"
    return None


def _random_scores(model: nn.Module, generator: torch.Generator) -> Scores:
    """Distinct random per-weight and per-unit scores for every prunable layer."""
    scores = Scores()
    for name, layer in prunable_layers(model).items():
        w = layer.weight
        scores.weight[name] = torch.rand(w.shape, generator=generator).to(w.device)
        scores.unit[name] = torch.rand(w.shape[0], generator=generator).to(w.device)
    return scores


def _clone_scores(scores: Scores) -> Scores:
    return Scores(
        {n: s.clone() for n, s in scores.weight.items()},
        {n: s.clone() for n, s in scores.unit.items()},
    )


def _same_scores(a: Scores, b: Scores) -> bool:
    return all(
        x.keys() == y.keys() and all(torch.equal(x[n], y[n]) for n in x)
        for x, y in ((a.weight, b.weight), (a.unit, b.unit))
    )


# --------------------------------------------------------------------------- declarations


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
    if not isinstance(name, str) or not _NAME.match(name):
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
) -> tuple[type, _Check, dict[str, Any]]:
    """Class, checker and configuration of ``plugin`` (a class or an instance)."""
    cls = plugin if isinstance(plugin, type) else type(plugin)
    if params is None:
        params = {} if isinstance(plugin, type) else dict(getattr(plugin, "config", {}))
    check = _Check(cls, skip)
    _check_declarations(cls, check, base)
    _check_params(cls, check)
    return cls, check, dict(params)


# --------------------------------------------------------------------------- scorers


def check_scorer(
    plugin: type[Scorer] | Scorer,
    *,
    params: Mapping[str, Any] | None = None,
    model: nn.Module | None = None,
    example: Tensor | None = None,
    skip: Iterable[str] = (),
    seed: int = 0,
) -> None:
    """Check a scorer class (or object) against the contract; raise :class:`ConformanceError`.

    Args:
        params: parameters to make it with (default: the object's config, or the defaults).
        model, example: a model and an input batch for it (default: :func:`tiny_cnn` and
            eight 1 x 8 x 8 inputs); batches for ``needs_data`` scorers are drawn like
            ``example``, with targets over the model's output classes.
        skip: names of rules not to check (see :data:`RULES`).
    """
    cls, check, config = _start(plugin, params, skip, (Scorer,))
    with _isolated_rng(seed):
        if model is None:
            model, example = tiny_cnn(), torch.rand(8, 1, 8, 8)
        elif example is None:
            raise ValueError("check_scorer: give example= (an input batch for the model)")
        classes = _eval_forward(model, example).shape[-1]
        batches = _batches(example, classes) if cls.needs_data else None
        kept = [(x.clone(), y.clone()) for x, y in batches or []]
        scorer = check.call("runs", f"{cls.__name__}(**{config})", cls, **config)
        before = _snapshot(model)
        loss_fn = nn.functional.cross_entropy
        doing = f"scoring {type(model).__name__}"
        runs = []
        for _ in range(2):
            torch.manual_seed(seed + 1)
            runs.append(check.call("runs", doing, scorer.score, model, batches, loss_fn))
            problem = _changes(before, model)
            if problem:
                check.fail("model_untouched", f"after scoring, {problem}")
            if any(
                not (torch.equal(x, x0) and torch.equal(y, y0))
                for (x, y), (x0, y0) in zip(batches or [], kept, strict=True)
            ):
                check.fail("inputs_untouched", "the batches' inputs or targets changed")
        scores = runs[0]
        if not isinstance(scores, Scores):
            check.fail("runs", f"score() returned {type(scores).__name__}, not pruneplug.Scores")
            return
        _check_scores(scores, model, check)
        if not _same_scores(scores, runs[1]):
            check.fail("deterministic", "two runs after torch.manual_seed(same seed) differ")
        check.call("runs", f"calling the scorer ({doing})", scorer, model, batches, loss_fn)


def _check_scores(scores: Scores, model: nn.Module, check: _Check) -> None:
    layers = prunable_layers(model)
    if not scores.weight and not scores.unit:
        check.fail("scores.shapes", "both Scores.weight and Scores.unit are empty")
    for granularity, table in (("weight", scores.weight), ("unit", scores.unit)):
        for name, s in table.items():
            where = f"Scores.{granularity}[{name!r}]"
            if name not in layers:
                check.fail(
                    "scores.shapes",
                    f"{where} names no prunable layer; the prunable layers are {list(layers)}",
                )
                continue
            w = layers[name].weight
            expected = tuple(w.shape if granularity == "weight" else w.shape[:1])
            if not isinstance(s, Tensor) or tuple(s.shape) != expected:
                got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
                check.fail("scores.shapes", f"{where} has shape {got}, expected {expected}")
                continue
            if not s.is_floating_point() or s.device != w.device:
                check.fail("scores.values", f"{where} has dtype {s.dtype} on {s.device}")
            elif not torch.isfinite(s).all():
                check.fail("scores.values", f"{where} contains NaN or inf")
            if s.requires_grad:
                check.fail("scores.values", f"{where} requires grad (it holds an autograd graph)")


# --------------------------------------------------------------------------- pruners


def check_pruner(
    plugin: type[Pruner] | Pruner,
    *,
    params: Mapping[str, Any] | None = None,
    model: nn.Module | None = None,
    example: Tensor | None = None,
    skip: Iterable[str] = (),
    seed: int = 0,
) -> None:
    """Check a pruner class (or object) against the contract; raise :class:`ConformanceError`.

    Runs on ``model`` with input batch ``example`` (default: :func:`tiny_mlp` and
    :func:`tiny_cnn` on 1 x 8 x 8 inputs) with random per-weight and per-unit scores. Unstructured
    pruners are checked for PyTorch's mask convention and the sparsity reached; structured ones
    (``structured = True``) for a smaller, consistent, working copy.
    """
    cls, check, config = _start(plugin, params, skip, (Pruner,))
    with _isolated_rng(seed):
        if model is None:
            models = [(tiny_mlp(), torch.rand(8, 1, 8, 8)), (tiny_cnn(), torch.rand(8, 1, 8, 8))]
        elif example is None:
            raise ValueError("check_pruner: give example= (an input batch for the model)")
        else:
            models = [(model, example)]
        pruner = check.call("runs", f"{cls.__name__}(**{config})", cls, **config)
        generator = torch.Generator().manual_seed(seed)
        _check_bad_calls(pruner, copy.deepcopy(models[0][0]), check, generator)
        for net, x in models:
            scores = _random_scores(net, generator)
            other = _random_scores(net, generator)
            if cls.structured:
                _check_structured(pruner, net, x, scores, check, seed)
            else:
                _check_unstructured(pruner, net, x, scores, other, check, seed)


def _check_bad_calls(
    pruner: Pruner, model: nn.Module, check: _Check, generator: torch.Generator
) -> None:
    scores = _random_scores(model, generator)
    nan = _clone_scores(scores)
    next(iter(nan.weight.values()))[0].fill_(torch.nan)
    calls = [
        ("amount=1.0", scores, {"amount": 1.0}),
        ("amount=-0.1", scores, {"amount": -0.1}),
        ("amount=0.5, threshold=0.5", scores, {"amount": 0.5, "threshold": 0.5}),
        ("neither amount nor threshold", scores, {}),
        ("NaN in the scores", nan, {"amount": 0.5}),
    ]
    before = _snapshot(model)
    for what, s, kwargs in calls:
        try:
            pruner(model, s, **kwargs)
        except (ValueError, TypeError):
            pass
        except Exception as error:
            check.fail("pruner.bad_call", f"{what} raised {type(error).__name__}: {error}")
        else:
            check.fail("pruner.bad_call", f"{what} was accepted")
        problem = _changes(before, model)
        if problem or prune.is_pruned(model):
            check.fail(
                "pruner.bad_call",
                f"after the refused call ({what}), {problem or 'the model carries pruning masks'}",
            )


def _prune(
    pruner: Pruner, model: nn.Module, x: Tensor, scores: Scores, check: _Check, **kwargs: Any
) -> nn.Module:
    """Call the pruner on ``model``; check the result runs with the original output shape."""
    kept = _clone_scores(scores)
    expected = _eval_forward(model, x).shape
    args = ", ".join(f"{k}={v:g}" for k, v in kwargs.items())
    what = f"pruning {type(model).__name__} ({args})"
    out = check.call("runs", what, pruner, model, scores, **kwargs)
    if not _same_scores(scores, kept):
        check.fail("inputs_untouched", f"{what} changed the scores in place")
    if not isinstance(out, nn.Module):
        check.fail("runs", f"{what} returned {type(out).__name__}, not an nn.Module")
    rule = "structured.consistent" if pruner.structured else "runs"
    got = check.call(rule, f"the forward pass after {what}", _eval_forward, out, x)
    if got.shape != expected:
        check.fail(
            rule, f"after {what} the output shape is {tuple(got.shape)}, was {tuple(expected)}"
        )
    return out


def _masks(model: nn.Module, names: Iterable[str]) -> dict[str, Tensor]:
    """Current keep-masks (True = kept) of the named layers (all true when unpruned)."""
    modules = dict(model.named_modules())
    return {
        n: getattr(modules[n], "weight_mask", torch.ones_like(modules[n].weight)).bool()
        for n in names
    }


def _check_unstructured(
    pruner: Pruner,
    model: nn.Module,
    x: Tensor,
    scores: Scores,
    other: Scores,
    check: _Check,
    seed: int,
) -> None:
    names = list(scores.weight)
    torch.manual_seed(seed)
    pruned = _prune(pruner, copy.deepcopy(model), x, scores, check, amount=0.5)
    _check_mask_convention(pruned, names, x, check)
    masks = _masks(pruned, names)
    torch.manual_seed(seed)
    again = _masks(_prune(pruner, copy.deepcopy(model), x, scores, check, amount=0.5), names)
    if any(not torch.equal(masks[n], again[n]) for n in names):
        check.fail("deterministic", "two prunes after torch.manual_seed(same seed) differ")
    total = sum(m.numel() for m in masks.values())
    removed = sum(int((~m).sum()) for m in masks.values())
    tolerance = max(0.01, len(names) / total)
    if abs(removed / total - 0.5) > tolerance:
        check.fail(
            "unstructured.sparsity",
            f"amount=0.5 removed {removed} of {total} scored weights ({removed / total:.1%})",
        )
    flat_scores = torch.cat([scores.weight[n].flatten() for n in names])
    flat_masks = torch.cat([masks[n].flatten() for n in names])
    if removed and flat_scores[~flat_masks].mean() >= flat_scores[flat_masks].mean():
        check.fail(
            "pruner.respects_scores",
            "the removed weights score "
            f"{flat_scores[~flat_masks].mean():.3f} on average, the kept ones "
            f"{flat_scores[flat_masks].mean():.3f}",
        )
    twice = _masks(_prune(pruner, pruned, x, other, check, amount=0.5), names)
    revived = sum(int((twice[n] & ~masks[n]).sum()) for n in names)
    if revived:
        check.fail("unstructured.compose", f"pruning again brought back {revived} removed weights")
    zero = _prune(pruner, copy.deepcopy(model), x, scores, check, amount=0.0)
    left = sum(int((~m).sum()) for m in _masks(zero, names).values())
    if left:
        check.fail("unstructured.sparsity", f"amount=0 removed {left} weights")
    t = float(flat_scores.median())
    by_t = _masks(_prune(pruner, copy.deepcopy(model), x, scores, check, threshold=t), names)
    wrong = sum(int((by_t[n] != (scores.weight[n] >= t)).sum()) for n in names)
    if wrong:
        check.fail(
            "unstructured.sparsity",
            f"threshold={t:.4f} got {wrong} weights wrong (kept below it or removed above it)",
        )


def _check_mask_convention(model: nn.Module, names: list[str], x: Tensor, check: _Check) -> None:
    rule = "unstructured.masks"
    if not prune.is_pruned(model):
        check.fail(rule, "after amount=0.5, prune.is_pruned(model) is False")
        return
    modules = dict(model.named_modules())
    for name in names:
        layer = modules[name]
        orig, mask = layer._parameters.get("weight_orig"), layer._buffers.get("weight_mask")
        if orig is None or mask is None:
            check.fail(rule, f"layer {name!r} has no weight_orig parameter / weight_mask buffer")
            return
        if not torch.equal(layer.weight, orig * mask):
            check.fail(rule, f"layer {name!r}: weight != weight_orig * weight_mask")
    removed = copy.deepcopy(model)
    before = _eval_forward(removed, x)
    for module in removed.modules():
        if "weight_mask" in module._buffers:
            check.call(rule, "prune.remove(layer, 'weight')", prune.remove, module, "weight")
    if prune.is_pruned(removed):
        check.fail(rule, "after prune.remove on every masked weight, the model is still pruned")
    if not torch.allclose(_eval_forward(removed, x), before, atol=1e-6):
        check.fail(rule, "prune.remove changed the model's outputs")


def _check_structured(
    pruner: Pruner, model: nn.Module, x: Tensor, scores: Scores, check: _Check, seed: int
) -> None:
    given = copy.deepcopy(model)
    before = _snapshot(given)
    torch.manual_seed(seed)
    pruned = _prune(pruner, given, x, scores, check, amount=0.5)
    problem = _changes(before, given)
    if problem:
        check.fail("inputs_untouched", f"the model passed in was changed: {problem}")
    problem = _inconsistent(pruned)
    if problem:
        check.fail("structured.consistent", problem)
    n_before, n_after = _count(model), _count(pruned)
    if n_after >= n_before or prune.is_pruned(pruned):
        masked = " and carries pruning masks" if prune.is_pruned(pruned) else ""
        check.fail(
            "structured.smaller", f"amount=0.5 left {n_after} of {n_before} parameters{masked}"
        )
    torch.manual_seed(seed)
    again = _prune(pruner, copy.deepcopy(model), x, scores, check, amount=0.5)
    a, b = pruned.state_dict(), again.state_dict()
    if a.keys() != b.keys() or any(
        a[k].shape != b[k].shape or not torch.equal(a[k], b[k]) for k in a
    ):
        check.fail("deterministic", "two prunes after torch.manual_seed(same seed) differ")
    zero = _prune(pruner, copy.deepcopy(model), x, scores, check, amount=0.0)
    if _count(zero) != n_before:
        check.fail("structured.smaller", f"amount=0 left {_count(zero)} of {n_before} parameters")


# --------------------------------------------------------------------------- augmenters


def check_augmenter(
    plugin: type[ImageAugmenter] | type[TextAugmenter] | ImageAugmenter | TextAugmenter,
    *,
    params: Mapping[str, Any] | None = None,
    images: Tensor | None = None,
    texts: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    seed: int = 0,
) -> None:
    """Check an image or text augmenter class (or object); raise :class:`ConformanceError`.

    Image augmenters run on ``images`` (default: six random 3 x 16 x 16 images with exact 0s
    and 1s), with class targets (one-hot targets for ``mixes_targets``) and, for
    ``needs_model``, a small classifier. A declared ``p`` is set to 1 unless given, so every
    sample is transformed. Text augmenters run on ``texts`` (default: :data:`TEXTS`).
    """
    cls, check, config = _start(plugin, params, skip, (ImageAugmenter, TextAugmenter))
    with _isolated_rng(seed):
        if issubclass(cls, TextAugmenter):
            _check_text(cls, config, list(texts or TEXTS), check, seed)
        else:
            _check_image(cls, config, _images() if images is None else images, check, seed)


def _check_text(
    cls: type[TextAugmenter], config: dict[str, Any], texts: list[str], check: _Check, seed: int
) -> None:
    aug = check.call("runs", f"{cls.__name__}(**{config})", cls, **config)
    kept = list(texts)

    def run() -> Any:
        return aug(texts, generator=torch.Generator().manual_seed(seed))

    outs = []
    for global_seed in (1, 2):
        _reseed_globals(global_seed)
        outs.append(check.call("runs", f"augmenting {texts}", run))
        if texts != kept:
            check.fail("inputs_untouched", "the list of texts was changed in place")
    out = outs[0]
    if not isinstance(out, list) or len(out) != len(texts):
        check.fail("text.output", f"{len(texts)} texts gave {out!r}")
    bad = [o for o in out if not isinstance(o, str) or not o.strip()]
    if bad:
        check.fail("text.output", f"the output holds {bad[0]!r} (from {texts})")
    if outs[1] != out:
        _generator_failure(check, outs[1], run)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)
    return a == b


def _generator_failure(check: _Check, second: Any, run: Callable[[], Any]) -> None:
    """Two runs with one generator seed differed: say whether global state or chance did it."""
    _reseed_globals(2)
    third = run()
    reason = (
        "it depends on the global random state (torch.manual_seed / random.seed changed it)"
        if _equal(third, second)
        else "it differs between runs even with the same global random state"
    )
    check.fail("generator", f"the same generator seed gave different outputs: {reason}")


def _check_image(
    cls: type[ImageAugmenter], config: dict[str, Any], images: Tensor, check: _Check, seed: int
) -> None:
    declared = {p.name for p in cls.params}
    if "p" in declared and "p" not in config:
        config["p"] = 1.0
    aug = check.call("runs", f"{cls.__name__}(**{config})", cls, **config)
    n, classes = len(images), 4
    labels = torch.arange(n) % classes
    targets = nn.functional.one_hot(labels, classes).float() if cls.mixes_targets else labels
    extra: dict[str, Any] = {}
    if cls.needs_model:
        extra = {"model": _attack_model(images, classes), "loss_fn": nn.functional.cross_entropy}
        before = _snapshot(extra["model"])
    kept_images, kept_targets = images.clone(), targets.clone()

    def run(batch: Tensor = images, ys: Tensor | None = targets) -> Any:
        return aug(batch, ys, generator=torch.Generator().manual_seed(seed), **extra)

    outs = []
    for global_seed in (1, 2):
        _reseed_globals(global_seed)
        outs.append(check.call("runs", f"augmenting a batch of shape {tuple(images.shape)}", run))
        if not (torch.equal(images, kept_images) and torch.equal(targets, kept_targets)):
            check.fail("inputs_untouched", "the images or targets passed in were changed")
        if cls.needs_model:
            problem = _changes(before, extra["model"])
            if problem:
                check.fail("model_untouched", f"after augmenting, {problem}")
    out = outs[0]
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Tensor)):
        check.fail(
            "runs",
            f"aug(images, targets) returned {type(out).__name__}, not a tuple (images, targets)",
        )
        return
    out_images, out_targets = out
    _check_image_output(out_images, images, check, "the batch")
    if cls.mixes_targets:
        _check_soft_targets(out_targets, n, classes, check)
    elif not torch.equal(out_targets, targets):
        check.fail("image.targets", "the targets came back changed")
    if not _equal(outs[1], out):
        _generator_failure(check, outs[1], run)
    single = check.call("runs", "augmenting one C x H x W image", run, images[0], targets[:1])
    _check_image_output(single[0], images[0], check, "one C x H x W image")
    if not cls.needs_model:  # a model fixes its input dtype
        double = check.call("runs", "augmenting a float64 batch", run, images.double())
        if double[0].dtype != torch.float64:
            check.fail("image.shape", f"a float64 batch came back as {double[0].dtype}")
    _check_per_sample(aug, images, targets, extra, check, seed)
    if "p" in declared:
        off = check.call("runs", f"{cls.__name__}(p=0)", cls, **{**config, "p": 0.0})
        got = check.call(
            "runs",
            "augmenting with p=0",
            off,
            images,
            targets,
            generator=torch.Generator().manual_seed(seed),
            **extra,
        )
        if not torch.equal(got[0], images):
            check.fail("image.p", "with p=0 some images changed")


def _check_image_output(out: Tensor, given: Tensor, check: _Check, what: str) -> None:
    if (out.shape, out.dtype, out.device) != (given.shape, given.dtype, given.device):
        check.fail(
            "image.shape",
            f"{what}: {tuple(given.shape)} {given.dtype} on {given.device} "
            f"came back as {tuple(out.shape)} {out.dtype} on {out.device}",
        )
    if not torch.isfinite(out).all():
        check.fail("image.range", f"{what}: the output contains NaN or inf")
    elif out.min() < 0 or out.max() > 1:
        check.fail("image.range", f"{what}: the output spans [{out.min():.3g}, {out.max():.3g}]")


def _check_soft_targets(targets: Tensor, n: int, classes: int, check: _Check) -> None:
    if not isinstance(targets, Tensor) or tuple(targets.shape) != (n, classes):
        got = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        check.fail("mixing.targets", f"one-hot targets of shape {(n, classes)} came back as {got}")
        return
    sums = targets.sum(1)
    if (targets < 0).any() or not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        check.fail(
            "mixing.targets",
            f"rows of the returned targets sum to {sums.tolist()} (min value {targets.min():.3g})",
        )


def _check_per_sample(
    aug: ImageAugmenter,
    images: Tensor,
    targets: Tensor,
    extra: dict[str, Any],
    check: _Check,
    seed: int,
) -> None:
    rule = "image.per_sample"
    n = len(images)
    generator = torch.Generator().manual_seed(seed)
    params = check.call(
        rule, "forward_parameters", aug.forward_parameters, images.shape, generator, images.device
    )
    for key, value in params.items():
        if not isinstance(value, Tensor) or value.dim() == 0 or len(value) != n:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            check.fail(rule, f"params[{key!r}] has shape {shape}; expected first dimension {n}")
            return
    if aug.mixes_targets:
        return  # a mixed sample depends on its partner by design
    whole = check.call(rule, "transform", aug.transform, images, params, targets=targets, **extra)
    for i in (0, n - 1):
        part = {k: v[i : i + 1] for k, v in params.items()}
        alone = check.call(
            rule,
            "transform on one sample",
            aug.transform,
            images[i : i + 1],
            part,
            targets=targets[i : i + 1],
            **extra,
        )
        if not torch.allclose(alone[0], whole[0][i : i + 1], atol=1e-5):
            check.fail(
                rule,
                f"sample {i} comes out differently alone than within the batch, "
                "with the same parameters",
            )


# --------------------------------------------------------------------------- entry points


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
    if issubclass(cls, Scorer):
        check_scorer(plugin, **kw)  # type: ignore[arg-type]
    elif issubclass(cls, Pruner):
        check_pruner(plugin, **kw)  # type: ignore[arg-type]
    elif issubclass(cls, (ImageAugmenter, TextAugmenter)):
        check_augmenter(plugin, **kw)  # type: ignore[arg-type]
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
