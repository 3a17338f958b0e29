"""The checks of a scorer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..contracts import Scorer, Scores, prunable_layers
from ..plumbing import layer_tensor, prunable_tensors
from .declarations import _start
from .fixtures import _batches, tiny_cnn
from .model_state import _changes, _eval_forward, _same_scores, _snapshot
from .rules import _Check, _isolated_rng


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
        model, example: a model and an input batch for it (default: :func:`tiny_cnn`, in
            training mode but for ``bn2`` in eval mode, and eight 1 x 8 x 8 inputs); batches
            for ``needs_data`` scorers are drawn like ``example``, with targets over the
            model's output classes.
        skip: names of rules not to check (see :data:`RULES`).
    """
    cls, check, config = _start(plugin, params, skip, (Scorer,))
    with _isolated_rng(seed):
        if model is None:  # modes mixed: a scorer that leaves it in train or eval mode is seen
            model, example = tiny_cnn().train(), torch.rand(8, 1, 8, 8)
            model.get_submodule("bn2").eval()
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
        torch.manual_seed(seed + 2)
        other_seed = check.call("runs", doing, scorer.score, model, batches, loss_fn)
        if isinstance(other_seed, Scores) and not _same_scores(scores, other_seed):
            check.fail(
                "generator",
                "two runs under different torch.manual_seed differ: the scores come from "
                "torch's global random state",
            )
        check.call("runs", f"calling the scorer ({doing})", scorer, model, batches, loss_fn)


def _check_scores(scores: Scores, model: nn.Module, check: _Check) -> None:
    layers = prunable_layers(model)
    # what each table may name: layers for weight and unit scores, tensors for tensor scores
    targets = {
        "weight": {n: (m, "weight") for n, m in layers.items()},
        "unit": {n: (m, "weight") for n, m in layers.items()},
        "tensor": prunable_tensors(model),
    }
    if not scores.weight and not scores.unit and not scores.tensor:
        check.fail("scores.shapes", "Scores.weight, Scores.unit and Scores.tensor are all empty")
    tables = (("weight", scores.weight), ("unit", scores.unit), ("tensor", scores.tensor))
    for granularity, table in tables:
        for name, s in table.items():
            where = f"Scores.{granularity}[{name!r}]"
            if name not in targets[granularity]:
                what = "tensor" if granularity == "tensor" else "layer"
                check.fail(
                    "scores.shapes",
                    f"{where} names no prunable {what}; the prunable {what}s are "
                    f"{list(targets[granularity])}",
                )
                continue
            w = layer_tensor(*targets[granularity][name])
            expected = tuple(w.shape[:1] if granularity == "unit" else w.shape)
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
