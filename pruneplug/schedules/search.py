"""Schedules that search: prune in steps until accuracy suffers (:func:`heuristic`), and the
per-layer sensitivity scan (:func:`sensitivity_scan`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from ..contracts import Batch, LossFn, Scores, prunable_layers
from ..engine import Data, derived_seed, evaluate, train
from ..metrics import count_parameters
from ..plumbing import copy_model
from .steps import PrunerLike, ScorerLike, Step, check_fraction


@dataclass
class HeuristicResult:
    """Where :func:`heuristic` stopped and why.

    Attributes:
        model: the most pruned model that stayed within tolerance (a copy of the input, unpruned
            if even the first step broke it).
        amount: its sparsity (0.0 if the first step broke the tolerance).
        dense_accuracy: validation accuracy of the model as given.
        amounts, accuracies: every step tried, in order, with its validation accuracy (the
            last one is the step rolled back when ``stopped_because`` says so).
        stopped_because: a sentence.
    """

    model: nn.Module
    amount: float
    dense_accuracy: float
    amounts: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    stopped_because: str = ""

    def plot(self, ax: Any = None, tolerance: float | None = None) -> Any:
        """Validation accuracy per step, the dense level and where it stopped; returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(self.amounts, self.accuracies, "o-", label="after each step")
        ax.axhline(self.dense_accuracy, color="grey", ls="--", label="dense")
        if tolerance is not None:
            ax.axhline(self.dense_accuracy - tolerance, color="red", ls=":", label="tolerance")
        ax.axvline(self.amount, color="green", ls="-.", label=f"kept {self.amount:.0%}")
        ax.set(xlabel="sparsity", ylabel="validation accuracy")
        ax.legend()
        return ax


def heuristic(
    model: nn.Module,
    scorer: ScorerLike,
    pruner: PrunerLike,
    *,
    val_data: Data,
    data: Data | None = None,
    step: float = 0.1,
    tolerance: float = 0.01,
    max_amount: float = 0.99,
    epochs_per_step: int = 0,
    loss_fn: LossFn | None = None,
    seed: int = 0,
    progress: bool = True,
    **train_kwargs: Any,
) -> HeuristicResult:
    """Prune by ``step`` while validation accuracy stays >= dense - ``tolerance``.

    The targets are ``step, 2 * step, ...`` up to ``max_amount`` (the last one exactly). After
    each prune (and ``epochs_per_step`` epochs of training on ``data``, if > 0; other keywords
    go to :func:`pruneplug.engine.train`) the model is evaluated on ``val_data``. A step whose
    accuracy falls below ``dense_accuracy - tolerance`` (``tolerance`` is in accuracy units:
    0.01 = one point) is rolled back - the copy taken before it is returned, masks and all.
    ``data`` also feeds data-needing scorers.
    """
    check_fraction("step", step)
    if step == 0:
        raise ValueError("step=0 would never prune: give a step in (0, 1), e.g. 0.1")
    check_fraction("max_amount", max_amount)
    check_fraction("tolerance", tolerance, closed=True)
    if epochs_per_step and data is None:
        raise ValueError("epochs_per_step > 0 trains between steps: pass data=<training data>")
    if epochs_per_step < 0:
        raise ValueError(f"epochs_per_step={epochs_per_step!r}: give a whole number >= 0")
    pruning = Step(scorer, pruner, data, loss_fn)
    count = math.ceil(round(max_amount / step, 9))
    targets = [min(round(step * k, 9), max_amount) for k in range(1, count + 1)]
    accepted = copy_model(model)
    dense = evaluate(accepted, val_data, loss_fn=loss_fn)["accuracy"]
    result = HeuristicResult(accepted, 0.0, dense)
    for k, target in enumerate(tqdm(targets, desc="steps", disable=not progress), start=1):
        done = pruning.done
        candidate = pruning(copy_model(accepted), target)
        if epochs_per_step and data is not None:  # data is checked above when epochs_per_step
            train(
                candidate,
                data,
                epochs=epochs_per_step,
                loss_fn=loss_fn,
                seed=derived_seed(seed, k),
                progress=False,
                **train_kwargs,
            )
        accuracy = evaluate(candidate, val_data, loss_fn=loss_fn)["accuracy"]
        result.amounts.append(target)
        result.accuracies.append(accuracy)
        if accuracy < dense - tolerance:
            pruning.done = done
            result.stopped_because = (
                f"accuracy {accuracy:.4f} at sparsity {target:.4g} fell below dense "
                f"{dense:.4f} - tolerance {tolerance:g}; that step was rolled back"
            )
            return result
        accepted = result.model = candidate
        result.amount = target
    result.stopped_because = f"reached max_amount={max_amount:g} within tolerance"
    return result


@dataclass
class Sensitivity:
    """Accuracy of the model with only one layer pruned, per layer and sparsity.

    ``accuracy[layer][i]`` is the accuracy with ``layer`` pruned to ``amounts[i]``;
    ``dense_accuracy`` is the accuracy of the model as given; ``untouched`` names the layers
    a structured pruner left as they were at every amount (it never removes the model's output
    units), which have no curve: no budget can be read from them.
    """

    amounts: list[float]
    accuracy: dict[str, list[float]]
    dense_accuracy: float
    untouched: list[str] = field(default_factory=list)

    def tolerable(self, drop: float = 0.01) -> dict[str, float]:
        """Per layer, the highest scanned sparsity whose accuracy is >= dense - ``drop``."""
        floor = self.dense_accuracy - drop
        return {
            layer: max([0.0] + [a for a, c in zip(self.amounts, accs, strict=True) if c >= floor])
            for layer, accs in self.accuracy.items()
        }

    def plot(self, ax: Any = None) -> Any:
        """One line per layer, accuracy against sparsity; returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.5))
        for layer, accs in self.accuracy.items():
            ax.plot(self.amounts, accs, "o-", label=layer)
        ax.axhline(self.dense_accuracy, color="grey", ls="--", label="dense")
        ax.set(xlabel="sparsity of the layer", ylabel="accuracy", title="sensitivity per layer")
        ax.legend(fontsize="small")
        return ax


def sensitivity_scan(
    model: nn.Module,
    layers: Sequence[str] | None = None,
    amounts: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95),
    *,
    scorer: ScorerLike = "magnitude",
    pruner: PrunerLike = "unstructured",
    data: Data,
    score_data: Data | Iterable[Batch] | None = None,
    loss_fn: LossFn | None = None,
    progress: bool = True,
) -> Sensitivity:
    """For each layer, prune only it to each of ``amounts`` (on copies) and measure accuracy.

    ``layers`` are prunable layer names (default: all). The model is scored once; each copy is
    pruned with that layer's scores alone and evaluated on ``data`` (use the validation split).
    ``score_data`` feeds data-needing scorers (default ``data``). The model is not changed.
    """
    available = prunable_layers(model)
    names = list(available) if layers is None else list(layers)
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ValueError(
            f"cannot scan layers {unknown or names}: the prunable layers are {', '.join(available)}"
        )
    for amount in amounts:
        check_fraction("each of amounts", amount)
    step = Step(scorer, pruner, data if score_data is None else score_data, loss_fn)
    scores = step.scores(model)
    dense = evaluate(model, data, loss_fn=loss_fn)["accuracy"]
    total = count_parameters(model)["total"]
    result = Sensitivity(list(amounts), {}, dense)
    for name in tqdm(names, desc="layers", disable=not progress):
        only = Scores(
            weight={name: scores.weight[name]} if name in scores.weight else {},
            unit={name: scores.unit[name]} if name in scores.unit else {},
        )
        accuracies, shrank = [], False
        for amount in amounts:
            step.done = 0.0
            pruned = step(copy_model(model), amount, scores=only)
            shrank |= count_parameters(pruned)["total"] < total
            accuracies.append(evaluate(pruned, data, loss_fn=loss_fn)["accuracy"])
        if shrank or not step.pruner.structured:  # a mask pruner can mask any scored layer
            result.accuracy[name] = accuracies
        else:
            result.untouched.append(name)
    return result
