"""The pruner contract: a model, its scores and an amount (or threshold) in, a pruned model out."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import ClassVar

from torch import nn
from torch.nn.utils import parametrize

from ..params import plain
from ..plumbing import prunable_targets, refresh_masked_weights
from .base import Plugin
from .scorers import Scores


def check_amount(amount: float | None, threshold: float | None) -> None:
    """Exactly one of ``amount`` (fraction in [0, 1)) and ``threshold`` (finite) must be given."""
    if (amount is None) == (threshold is None):
        raise ValueError(
            "give exactly one of amount= (the fraction to remove, in [0, 1)) and threshold= "
            "(remove every score below it)"
        )
    if amount is not None:
        if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
            raise TypeError(f"amount must be a number in [0, 1), got {amount!r}")
        if not 0 <= amount < 1:
            raise ValueError(
                f"amount={amount!r} is out of range: the fraction to remove must be in [0, 1) "
                "(1 would remove everything)"
            )
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not math.isfinite(threshold)
    ):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")


def check_plain_parameters(model: nn.Module, names: Iterable[str], action: str) -> None:
    """Refuse, before anything changes, targets (:func:`prunable_targets` names) of ``model``
    that are not plain parameters, which a pruner cannot ``action`` ("mask", "resize").

    ``torch.nn.utils.prune`` masks a parameter by replacing it with ``<name>_orig`` and a hook;
    a parametrized tensor (``torch.nn.utils.parametrize``: ``weight_norm``, ``spectral_norm``,
    orthogonal...) or one that a hook computes (the old ``torch.nn.utils.weight_norm``) has no
    such parameter, and the failure would come after other layers were masked. The core checks
    the scored targets of mask pruners; a structured pruner that rebuilds layers checks all.
    """
    targets = prunable_targets(model)
    for name in names:
        module, attribute = targets[name]
        if parametrize.is_parametrized(module, attribute):
            why = "is parametrized (torch.nn.utils.parametrize)"
            fix = f"torch.nn.utils.parametrize.remove_parametrizations(layer, {attribute!r})"
        elif attribute in module._parameters or hasattr(module, f"{attribute}_orig"):
            continue
        else:
            why = "is not a parameter of the layer (a hook computes it)"
            fix = f"torch.nn.utils.remove_weight_norm(layer, {attribute!r}) for weight_norm"
        raise ValueError(
            f"cannot {action} {name!r}: its {attribute!r} {why}, and pruning needs the "
            f"parameter itself; make it a plain parameter first with {fix}"
            + (", or leave the layer out of the scores" if action == "mask" else "")
        )


class Pruner(Plugin):
    """Pruner: model + scores + amount (or threshold) -> pruned model.

    Implement :meth:`prune`. The core checks the amount, the threshold and the scores first, so
    a bad call leaves the model untouched. Two families:

    * unstructured pruners zero weights with PyTorch's own masks (``weight_orig`` +
      ``weight_mask`` and a forward pre-hook, as ``torch.nn.utils.prune`` makes them), so
      ``prune.is_pruned`` and ``prune.remove`` work; they change the model in place and return it;
    * structured pruners (``structured = True``) remove whole units and return a physically
      smaller model.

    A pruner whose own parameters say what to remove (N:M sparsity, top-k per row) sets
    ``takes_amount = False``: it is called as ``pruner(model, scores)``, an ``amount`` or
    ``threshold`` is refused, and the conformance kit checks it by its declared parameters.
    """

    kind = "pruner"
    structured: ClassVar[bool] = False
    takes_amount: ClassVar[bool] = True

    def __call__(
        self,
        model: nn.Module,
        scores: Scores,
        *,
        amount: float | None = None,
        threshold: float | None = None,
    ) -> nn.Module:
        """Prune ``model`` by ``amount`` (fraction to remove) or ``threshold`` (score bound)."""
        # NumPy scalars and 0-d tensors count as numbers; the method sees Python floats
        amount, threshold = (None if v is None else plain(v) for v in (amount, threshold))
        if self.takes_amount:
            check_amount(amount, threshold)
            amount, threshold = (None if v is None else float(v) for v in (amount, threshold))
        elif amount is not None or threshold is not None:
            raise ValueError(
                f"pruner {self.name!r} removes what its own parameters say "
                f"({', '.join(p.name for p in self.params) or 'none'}): call it without "
                "amount= or threshold="
            )
        if not isinstance(scores, Scores):
            raise TypeError(
                f"pruner {self.name!r} needs pruneplug.Scores (from a scorer), got "
                f"{type(scores).__name__}: scores = pruneplug.get_scorer('magnitude')(model)"
            )
        scores.check(model)
        if not self.structured:
            check_plain_parameters(model, (*scores.weight, *scores.unit, *scores.tensor), "mask")
        pruned = self.prune(model, scores, amount=amount, threshold=threshold)
        if isinstance(pruned, nn.Module):  # the kit reports a pruner that returns anything else
            refresh_masked_weights(pruned)  # masked weights as plain tensors: deepcopy works
        return pruned

    def prune(
        self,
        model: nn.Module,
        scores: Scores,
        *,
        amount: float | None,
        threshold: float | None,
    ) -> nn.Module:
        """Remove the least important part of ``model`` and return the pruned model."""
        raise NotImplementedError
