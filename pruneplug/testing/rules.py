"""The contract's rules, the error that reports a broken one, and the per-plugin checker."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Rule:
    """One rule of the contract: what it asks, and how a plugin that breaks it is fixed."""

    what: str
    fix: str


RULES: dict[str, Rule] = {
    "declaration.base": Rule(
        "the class derives from pruneplug.Scorer, Pruner, ImageAugmenter or TextAugmenter",
        "subclass one of them and implement its one method (score or score_layer, prune, "
        "apply, mix or attack, augment_one)",
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
        "draw randomness only from a torch.Generator: the one passed in (augmenters) or "
        "torch.Generator().manual_seed(seed) from a declared seed parameter (scorers); not "
        "from Python's random or numpy; and avoid order-dependent set/dict iteration",
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
    "unstructured.in_place": Rule(
        "an unstructured pruner prunes the model it is given, in place, and returns that model",
        "apply the masks to the given model's layers (prune.custom_from_mask) and return the "
        "model itself, not a copy; callers copy first when they want to keep the dense model",
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
        "return only the images from apply; derive from MixingAugmenter if the targets change",
    ),
    "mixing.targets": Rule(
        "an augmenter that mixes targets returns soft targets N x classes: non-negative rows "
        "summing to 1",
        "mix one-hot (or soft) targets with the same weights as the images: "
        "lam * y + (1 - lam) * y[perm]",
    ),
    "generator": Rule(
        "the same generator seed gives the same output, whatever the global random state: all "
        "randomness comes from the generator passed in (a scorer: from its own seed parameter)",
        "draw every random number with generator=generator (torch.rand(..., generator=g), "
        "torch.randint, torch.randperm); a scorer declares a seed parameter and draws from "
        "torch.Generator().manual_seed(seed); never use Python's random, numpy.random or "
        "torch's global RNG",
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
