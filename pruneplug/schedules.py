r"""When to prune: one shot, in rounds, gradually during training, or until accuracy suffers.

A scorer says *what* matters, a pruner *removes* it; a schedule decides *how much, when*, and
how the network recovers in between. Every function here takes the scorer and the pruner as
plugin objects (``pruneplug.get_scorer("magnitude", p=2)``) or as names (``"magnitude"``, with
default parameters), works on a **copy** of the model (the model passed in is never changed,
also when a call fails) and is deterministic for a given ``seed``.

``amount`` is always the **final sparsity**: the fraction of weights (unstructured pruners) or
of units (structured pruners) removed from the model as it was given.

* :func:`one_shot` - score once, prune once (Han et al., NeurIPS 2015: then fine-tune).
* :func:`iterative` - ``rounds`` of prune -> train, with per-round targets
  :func:`sparsity_targets` spaced ``"geometric"`` (the same fraction of the *remaining* weights
  each round, Han et al. 2015 / Frankle & Carbin 2019), ``"linear"`` (the same fraction of the
  *original* weights each round) or ``"cubic"`` (AGP's curve, fast first, slow at the end).
  Each round is a separate :func:`pruneplug.engine.train` run.
* :func:`gradual` - automated gradual pruning (AGP, Zhu & Gupta, "To prune, or not to prune",
  2017): one training run whose sparsity follows :func:`agp_sparsity`,
  :math:`s_t = s_f + (s_i - s_f)(1 - t/n)^3`, pruned between epochs; the optimiser state and
  the learning-rate schedule carry through. Unstructured (mask) pruners only.
* :func:`heuristic` - prune in steps while the validation accuracy stays within ``tolerance``
  of the dense model's; the step that breaks it is rolled back.
* :func:`sensitivity_scan` - per layer, accuracy against sparsity when only that layer is
  pruned (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017), to see which layers
  tolerate pruning.
* :func:`recipe_high_sparsity` - the documented recipe for unstructured pruning to 90-99 %
  (benchmark row P1 of ``pruneplug bench pruning``).

Recovery penalties (L1 sparse training, distillation) live in :mod:`pruneplug.recovery`; pass
them as ``penalty=`` - every keyword a schedule does not know goes to
:func:`pruneplug.engine.train`.

**Devices.** The copy a schedule prunes and trains starts where the given model is and trains
there (``device=None``), or on ``device=`` (the copy moves; the model given stays where it is).
Scorers receive the data as given and move each batch to the model's device.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .contracts import Batch, LossFn, Pruner, Scorer, Scores, prunable_layers
from .engine import Data, History, evaluate, pick_device, train
from .recovery import combine, distillation_penalty
from .registry import get_pruner, get_scorer

ScorerLike = Scorer | str
PrunerLike = Pruner | str
SPACINGS = ("geometric", "linear", "cubic")


# --------------------------------------------------------------------------- building blocks


def resolve_scorer(scorer: ScorerLike) -> Scorer:
    """A scorer object as given, or the registered scorer of that name (default parameters)."""
    if isinstance(scorer, str):
        return get_scorer(scorer)
    if not isinstance(scorer, Scorer):
        raise TypeError(
            f"scorer must be a Scorer or a scorer name, got {type(scorer).__name__}: e.g. "
            "'magnitude' or pruneplug.get_scorer('magnitude', p=2)"
        )
    return scorer


def resolve_pruner(pruner: PrunerLike) -> Pruner:
    """A pruner object as given, or the registered pruner of that name (default parameters)."""
    if isinstance(pruner, str):
        return get_pruner(pruner)
    if not isinstance(pruner, Pruner):
        raise TypeError(
            f"pruner must be a Pruner or a pruner name, got {type(pruner).__name__}: e.g. "
            "'unstructured' or pruneplug.get_pruner('unstructured', scope='local')"
        )
    return pruner


def check_fraction(name: str, value: float, *, top: float = 1.0, closed: bool = False) -> None:
    """``value`` must be a number in [0, top) (or [0, top] when ``closed``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r}: give a number")
    if not (0 <= value <= top if closed else 0 <= value < top):
        bracket = "]" if closed else ")"
        raise ValueError(f"{name}={value!r} is out of range: give a number in [0, {top:g}{bracket}")


def check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: give a whole number >= 1")


def as_batches(data: Data | Iterable[Batch] | None, batch_size: int = 256) -> Any:
    """Batches for a scorer: a Dataset gets an unshuffled loader; anything else is used as is."""
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        return DataLoader(data, batch_size=batch_size, shuffle=False)
    return data


class Step:
    """Score and prune one model towards cumulative targets; the pieces every schedule shares.

    For an unstructured (mask) pruner, ``amount`` already means the sparsity after the call,
    counting weights pruned before. A structured pruner removes a fraction of the units the
    model *still has*, so the step converts the cumulative target into that fraction.
    """

    def __init__(
        self,
        scorer: ScorerLike,
        pruner: PrunerLike,
        data: Data | Iterable[Batch] | None,
        loss_fn: LossFn | None,
    ) -> None:
        self.scorer = resolve_scorer(scorer)
        self.pruner = resolve_pruner(pruner)
        if self.scorer.needs_data and data is None:
            raise ValueError(
                f"scorer {self.scorer.name!r} needs data: pass data=<the training Dataset or a "
                "DataLoader>"
            )
        self.batches = as_batches(data)
        self.loss_fn = loss_fn
        self.done = 0.0  # cumulative fraction removed so far (structured pruners)

    def scores(self, model: nn.Module) -> Scores:
        return self.scorer(model, self.batches, self.loss_fn)

    def __call__(self, model: nn.Module, target: float, scores: Scores | None = None) -> nn.Module:
        """Prune ``model`` to the cumulative ``target``; returns the pruned model."""
        scores = self.scores(model) if scores is None else scores
        if not self.pruner.structured:
            return self.pruner(model, scores, amount=target)
        relative = max(0.0, 1 - (1 - target) / (1 - self.done))
        pruned = self.pruner(model, scores, amount=relative)
        self.done = target
        return pruned


class Pruned(NamedTuple):
    """What a training schedule returns: ``model, history, sparsity = iterative(...)``.

    ``sparsity[i]`` is the target sparsity the model had during epoch ``i + 1`` of ``history``.
    """

    model: nn.Module
    history: History
    sparsity: list[float]


# --------------------------------------------------------------------------- sparsity curves


def agp_sparsity(step: int, total_steps: int, final: float, initial: float = 0.0) -> float:
    r"""AGP's sparsity after pruning step ``step`` of ``total_steps`` (Zhu & Gupta 2017).

    :math:`s_t = s_f + (s_i - s_f)(1 - t/n)^3`: ``initial`` at step 0, ``final`` at step ``n``,
    fast at first (when there are many redundant weights) and slow near the end.
    """
    check_count("total_steps", total_steps)
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= total_steps:
        raise ValueError(f"step={step!r}: give a whole number in [0, total_steps={total_steps}]")
    check_fraction("final", final)
    check_fraction("initial", initial, top=final, closed=True)
    return final + (initial - final) * (1 - step / total_steps) ** 3


def sparsity_targets(final: float, rounds: int, spacing: str = "geometric") -> list[float]:
    r"""Cumulative target sparsity after each of ``rounds`` rounds; the last is ``final``.

    * ``"geometric"``: the same fraction of the remaining weights each round,
      :math:`s_r = 1 - (1 - s_f)^{r/k}` (90 % in 3 rounds: 53.6, 78.5, 90 %);
    * ``"linear"``: :math:`s_r = s_f \, r/k` (30, 60, 90 %);
    * ``"cubic"``: AGP's curve :func:`agp_sparsity` (63.3, 86.7, 90 %).
    """
    check_fraction("final", final)
    check_count("rounds", rounds)
    if spacing not in SPACINGS:
        raise ValueError(f"spacing={spacing!r}: choose one of {', '.join(SPACINGS)}")
    if spacing == "geometric":
        targets = [1 - (1 - final) ** (r / rounds) for r in range(1, rounds + 1)]
    elif spacing == "linear":
        targets = [final * r / rounds for r in range(1, rounds + 1)]
    else:
        targets = [agp_sparsity(r, rounds, final) for r in range(1, rounds + 1)]
    targets[-1] = final  # exact, whatever the rounding
    return targets


# --------------------------------------------------------------------------- schedules


def one_shot(
    model: nn.Module,
    scorer: ScorerLike,
    pruner: PrunerLike,
    amount: float,
    *,
    data: Data | Iterable[Batch] | None = None,
    loss_fn: LossFn | None = None,
) -> nn.Module:
    """Score ``model`` once and prune ``amount`` of it; returns the pruned copy.

    ``data`` (a Dataset, a DataLoader or any iterable of batches) feeds scorers that need it
    (gradient, taylor, ablation); ``loss_fn`` is their loss (default cross-entropy). Recover
    afterwards with :func:`pruneplug.engine.fine_tune` or :func:`pruneplug.recovery.distill`.
    """
    check_fraction("amount", amount)
    step = Step(scorer, pruner, data, loss_fn)
    return step(copy.deepcopy(model), amount)


def iterative(
    model: nn.Module,
    scorer: ScorerLike,
    pruner: PrunerLike,
    amount: float,
    *,
    data: Data,
    rounds: int = 3,
    epochs_per_round: int = 2,
    spacing: str = "geometric",
    loss_fn: LossFn | None = None,
    seed: int = 0,
    progress: bool = True,
    **train_kwargs: Any,
) -> Pruned:
    """``rounds`` of prune -> train, ending at sparsity ``amount`` exactly; returns a copy.

    Round ``r`` prunes to ``sparsity_targets(amount, rounds, spacing)[r - 1]`` (see
    :func:`sparsity_targets`) and then trains ``epochs_per_round`` epochs on ``data`` with
    :func:`pruneplug.engine.train` (seed ``seed + r``); other keywords (``lr``, ``batch_size``,
    ``penalty``, ``val_data``...) go to ``train`` - e.g. ``lr=0.01`` for fine-tuning rates. The
    histories are joined, epochs numbered through. Scorers are fed ``data`` (unshuffled).
    """
    check_fraction("amount", amount)
    targets = sparsity_targets(amount, rounds, spacing)
    check_count("epochs_per_round", epochs_per_round)
    step = Step(scorer, pruner, data, loss_fn)
    model = copy.deepcopy(model)
    history, sparsity = History(), []
    for r, target in enumerate(tqdm(targets, desc="rounds", disable=not progress), start=1):
        model = step(model, target)
        rounds_history = train(
            model,
            data,
            epochs=epochs_per_round,
            loss_fn=loss_fn,
            seed=seed + r,
            progress=False,
            **train_kwargs,
        )
        for row in rounds_history.rows:
            history.rows.append({**row, "epoch": len(history) + 1})
            sparsity.append(target)
    return Pruned(model, history, sparsity)


def gradual(
    model: nn.Module,
    scorer: ScorerLike,
    pruner: PrunerLike,
    amount: float,
    *,
    data: Data,
    epochs: int = 10,
    steps: int = 5,
    every: int = 1,
    initial: float = 0.0,
    loss_fn: LossFn | None = None,
    seed: int = 0,
    progress: bool = True,
    **train_kwargs: Any,
) -> Pruned:
    """AGP (Zhu & Gupta 2017): prune during one training run of ``epochs``; returns a copy.

    Pruning step ``j = 1..steps`` sets the sparsity to ``agp_sparsity(j, steps, amount,
    initial)``; step 1 happens before the first epoch and step ``j`` after epoch
    ``(j - 1) * every``, so the final sparsity is reached after epoch ``(steps - 1) * every``
    and the remaining epochs train at it (``steps=5, every=2, epochs=10``: prune before epochs
    1, 3, 5, 7, 9). Unlike :func:`iterative`, this is **one** :func:`pruneplug.engine.train`
    run: the optimiser's momentum and the learning-rate ``schedule`` carry through the pruning
    steps. Other keywords go to ``train``; an ``on_epoch_end`` of yours runs before the pruning
    step of that epoch. Needs an unstructured (mask) pruner: a structured one returns a new
    model, which a running optimiser cannot follow.
    """
    check_fraction("amount", amount)
    check_count("epochs", epochs)
    check_count("steps", steps)
    check_count("every", every)
    targets = [agp_sparsity(j, steps, amount, initial) for j in range(1, steps + 1)]
    if (steps - 1) * every >= epochs:
        raise ValueError(
            f"steps={steps}, every={every} prunes for the last time after epoch "
            f"{(steps - 1) * every}, which leaves no epoch of {epochs} to train at the final "
            "sparsity: use fewer steps, a smaller every, or more epochs"
        )
    step = Step(scorer, pruner, data, loss_fn)
    if step.pruner.structured:
        raise ValueError(
            f"gradual() needs a mask (unstructured) pruner, but {step.pruner.name!r} is "
            "structured: it returns a new, smaller model that the running optimiser cannot "
            "follow; use iterative() instead"
        )
    model = copy.deepcopy(model)
    step(model, targets[0])
    current = [targets[0]]
    at = {(j - 1) * every: target for j, target in enumerate(targets, start=1)}

    user_hook = train_kwargs.pop("on_epoch_end", None)

    def on_epoch_end(epoch: int, trained: nn.Module) -> None:
        if user_hook is not None:  # sees the model as trained, before this epoch's prune
            user_hook(epoch, trained)
        if epoch in at:
            step(trained, at[epoch])
        current.append(at.get(epoch, current[-1]))

    history = train(
        model,
        data,
        epochs=epochs,
        loss_fn=loss_fn,
        on_epoch_end=on_epoch_end,
        seed=seed,
        progress=progress,
        **train_kwargs,
    )
    return Pruned(model, history, current[:epochs])


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
    accepted = copy.deepcopy(model)
    dense = evaluate(accepted, val_data, loss_fn=loss_fn)["accuracy"]
    result = HeuristicResult(accepted, 0.0, dense)
    for k, target in enumerate(tqdm(targets, desc="steps", disable=not progress), start=1):
        done = pruning.done
        candidate = pruning(copy.deepcopy(accepted), target)
        if epochs_per_step:
            train(
                candidate,
                data,
                epochs=epochs_per_step,
                loss_fn=loss_fn,
                seed=seed + k,
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
    ``dense_accuracy`` is the accuracy of the model as given.
    """

    amounts: list[float]
    accuracy: dict[str, list[float]]
    dense_accuracy: float

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
    result = Sensitivity(list(amounts), {}, dense)
    for name in tqdm(names, desc="layers", disable=not progress):
        only = Scores(
            weight={name: scores.weight[name]} if name in scores.weight else {},
            unit={name: scores.unit[name]} if name in scores.unit else {},
        )
        result.accuracy[name] = []
        for amount in amounts:
            step.done = 0.0
            pruned = step(copy.deepcopy(model), amount, scores=only)
            result.accuracy[name].append(evaluate(pruned, data, loss_fn=loss_fn)["accuracy"])
    return result


# --------------------------------------------------------------------------- the P1 recipe


def recipe_high_sparsity(
    model: nn.Module,
    amount: float,
    *,
    data: Data,
    epochs: int = 10,
    teacher: nn.Module | None = None,
    scorer: ScorerLike = "magnitude",
    temperature: float = 2.0,
    distill_weight: float = 4.0,
    lr: float = 0.01,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    **train_kwargs: Any,
) -> Pruned:
    """Prune a trained model to a high unstructured sparsity in ``epochs``; returns a copy.

    The recipe of benchmark row P1 (``pruneplug bench pruning``; 90-99 % of the weights of the
    64-300-100-10 MLP on digits in 10 epochs):

    1. **gradual** pruning, :func:`gradual` with AGP's cubic curve: 5 steps, one every
       ``epochs // 5`` epochs, the first before training starts, so the last fifth of the
       budget trains at the final sparsity;
    2. **global** ``unstructured`` pruning of ``scorer`` scores (magnitude by default);
    3. **knowledge distillation** from ``teacher`` (default: the model as given, i.e. the dense
       network) throughout, :func:`pruneplug.recovery.distillation_penalty` with ``temperature``
       2 and weight 4 on top of the cross-entropy;
    4. SGD (momentum 0.9) at ``lr`` 0.01 with a cosine schedule and small batches (16): the
       budget counts epochs, and distillation makes the extra steps useful instead of
       over-fitting the labels.

    What mattered, measured on the validation split (3 seeds): distillation is most of the
    gain at 98-99 % (+6 to +8 points over the same schedule without it); small batches with
    a cosine schedule add 1-4 points at 99 %; the scorer (magnitude, lamp, taylor, hessian),
    iterative instead of gradual, and L1 sparse training before or during pruning changed the
    result by less than the noise (one validation sample is 0.5 point). Other keywords go to
    :func:`pruneplug.engine.train` (``val_data``, ``penalty`` - added to the distillation, e.g.
    :func:`pruneplug.recovery.l1_penalty`; ``device``).

    Devices: with ``device=`` the default teacher is a copy of ``model`` on that device (the
    model given is never moved); a ``teacher`` you pass runs where it is.
    """
    check_count("epochs", epochs)
    steps = min(5, epochs)
    device = train_kwargs.get("device")
    if teacher is None:
        teacher = model if device is None else copy.deepcopy(model).to(pick_device(device))
    kd = distillation_penalty(teacher, temperature, distill_weight)
    return gradual(
        model,
        scorer,
        "unstructured",
        amount,
        data=data,
        epochs=epochs,
        steps=steps,
        every=max(1, epochs // steps),
        lr=lr,
        batch_size=batch_size,
        schedule=train_kwargs.pop("schedule", "cosine"),
        penalty=combine(kd, train_kwargs.pop("penalty", None)),
        seed=seed,
        progress=progress,
        **train_kwargs,
    )
