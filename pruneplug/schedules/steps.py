"""What every schedule shares: resolving plugins, checking arguments, one pruning step, and
the sparsity curves (AGP's cubic, geometric, linear) that say how much each step removes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..contracts import Batch, LossFn, Pruner, Scorer, Scores
from ..engine import Data, History
from ..registry import get_pruner, get_scorer

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


def require_mask_pruner(step: Step, schedule: str, why: str) -> None:
    """Refuse a structured pruner in a schedule that keeps training the same model (``why``)."""
    if step.pruner.structured:
        raise ValueError(
            f"{schedule} needs a mask (unstructured) pruner, but {step.pruner.name!r} is "
            f"structured: {why}"
        )


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
