"""The checks of a pruner: bad calls refused, then masks (unstructured) or a smaller model."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from ..contracts import Pruner, Scores
from .declarations import _start
from .fixtures import tiny_cnn, tiny_mlp
from .model_state import (
    _changes,
    _clone_scores,
    _count,
    _eval_forward,
    _inconsistent,
    _random_scores,
    _same_scores,
    _snapshot,
)
from .rules import _Check, _isolated_rng


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
    (``structured = True``) for a smaller, consistent, working copy. A pruner that takes no
    amount (``takes_amount = False``) is called as ``pruner(model, scores)`` with its declared
    parameters, and the checks that need an amount or a threshold are left out.
    """
    cls, check, config = _start(plugin, params, skip, (Pruner,))
    with _isolated_rng(seed):
        if model is None:
            models: list[tuple[nn.Module, Tensor]] = [
                (tiny_mlp(), torch.rand(8, 1, 8, 8)),
                (tiny_cnn(), torch.rand(8, 1, 8, 8)),
            ]
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
    if pruner.takes_amount:
        calls = [
            ("amount=1.0", scores, {"amount": 1.0}),
            ("amount=-0.1", scores, {"amount": -0.1}),
            ("amount=0.5, threshold=0.5", scores, {"amount": 0.5, "threshold": 0.5}),
            ("neither amount nor threshold", scores, {}),
            ("NaN in the scores", nan, {"amount": 0.5}),
        ]
    else:
        calls = [
            ("amount=0.5 (it takes none)", scores, {"amount": 0.5}),
            ("NaN in the scores", nan, {}),
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
    # schedules, deploy and serialize copy pruned models: a non-leaf tensor attribute breaks that
    check.call("runs", f"copy.deepcopy of the model after {what}", copy.deepcopy, out)
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
    half: dict[str, float] = {"amount": 0.5} if pruner.takes_amount else {}
    torch.manual_seed(seed)
    given = copy.deepcopy(model)
    pruned = _prune(pruner, given, x, scores, check, **half)
    if pruned is not given:
        check.fail(
            "unstructured.in_place",
            f"it returned a new {type(pruned).__name__} instead of the model it was given",
        )
    _check_mask_convention(pruned, names, x, check)
    masks = _masks(pruned, names)
    torch.manual_seed(seed)
    again = _masks(_prune(pruner, copy.deepcopy(model), x, scores, check, **half), names)
    if any(not torch.equal(masks[n], again[n]) for n in names):
        check.fail("deterministic", "two prunes after torch.manual_seed(same seed) differ")
    total = sum(m.numel() for m in masks.values())
    removed = sum(int((~m).sum()) for m in masks.values())
    tolerance = max(0.01, len(names) / total)
    if pruner.takes_amount and abs(removed / total - 0.5) > tolerance:
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
    twice = _masks(_prune(pruner, pruned, x, other, check, **half), names)
    revived = sum(int((twice[n] & ~masks[n]).sum()) for n in names)
    if revived:
        check.fail("unstructured.compose", f"pruning again brought back {revived} removed weights")
    if not pruner.takes_amount:
        return
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
        check.fail(rule, "after pruning, prune.is_pruned(model) is False")
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
    half: dict[str, float] = {"amount": 0.5} if pruner.takes_amount else {}
    torch.manual_seed(seed)
    pruned = _prune(pruner, given, x, scores, check, **half)
    problem = _changes(before, given)
    if problem:
        check.fail("inputs_untouched", f"the model passed in was changed: {problem}")
    problem = _inconsistent(pruned)
    if problem:
        check.fail("structured.consistent", problem)
    n_before, n_after = _count(model), _count(pruned)
    if n_after >= n_before or prune.is_pruned(pruned):
        masked = " and carries pruning masks" if prune.is_pruned(pruned) else ""
        check.fail("structured.smaller", f"pruning left {n_after} of {n_before} parameters{masked}")
    torch.manual_seed(seed)
    again = _prune(pruner, copy.deepcopy(model), x, scores, check, **half)
    a, b = pruned.state_dict(), again.state_dict()
    if a.keys() != b.keys() or any(
        a[k].shape != b[k].shape or not torch.equal(a[k], b[k]) for k in a
    ):
        check.fail("deterministic", "two prunes after torch.manual_seed(same seed) differ")
    if not pruner.takes_amount:
        return
    zero = _prune(pruner, copy.deepcopy(model), x, scores, check, amount=0.0)
    if _count(zero) != n_before:
        check.fail("structured.smaller", f"amount=0 left {_count(zero)} of {n_before} parameters")
