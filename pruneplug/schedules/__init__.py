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
* :func:`lottery_ticket` - iterative magnitude pruning with weight rewinding (Frankle & Carbin,
  ICLR 2019; Frankle et al., ICML 2020): prune ``rate`` of the remaining weights per round,
  rewind the survivors to their values at epoch ``k`` (:math:`m \odot \theta_k`), retrain;
  :func:`random_reinit` trains the same mask from a fresh initialisation (the papers' control).
  ``rate`` is per round: the final sparsity is :math:`1 - (1 - p)^R`.
* :func:`recipe_high_sparsity` - the documented recipe for unstructured pruning to 90-99 %
  (benchmark row P1 of ``pruneplug bench pruning``).

Recovery penalties (L1 sparse training, distillation) live in :mod:`pruneplug.recovery`; pass
them as ``penalty=`` - every keyword a schedule does not know goes to
:func:`pruneplug.engine.train`.

**Devices.** The copy a schedule prunes and trains starts where the given model is and trains
there (``device=None``), or on ``device=`` (the copy moves; the model given stays where it is).
Scorers receive the data as given and move each batch to the model's device.
The modules: :mod:`.steps` (the shared pieces and the sparsity curves), :mod:`.training`
(:func:`one_shot`, :func:`iterative`, :func:`gradual`, :func:`recipe_high_sparsity`),
:mod:`.search` (:func:`heuristic`, :func:`sensitivity_scan`) and :mod:`.lottery`
(:func:`lottery_ticket`, :func:`random_reinit`). Every public name is importable
from ``pruneplug.schedules``.
"""

from .lottery import Ticket, lottery_ticket, random_reinit
from .search import HeuristicResult, Sensitivity, heuristic, sensitivity_scan
from .steps import (
    SPACINGS,
    Pruned,
    PrunerLike,
    ScorerLike,
    Step,
    agp_sparsity,
    as_batches,
    check_count,
    check_fraction,
    resolve_pruner,
    resolve_scorer,
    sparsity_targets,
)
from .training import gradual, iterative, one_shot, recipe_high_sparsity

__all__ = [
    "SPACINGS",
    "HeuristicResult",
    "Pruned",
    "PrunerLike",
    "ScorerLike",
    "Sensitivity",
    "Step",
    "Ticket",
    "agp_sparsity",
    "as_batches",
    "check_count",
    "check_fraction",
    "gradual",
    "heuristic",
    "iterative",
    "lottery_ticket",
    "one_shot",
    "random_reinit",
    "recipe_high_sparsity",
    "resolve_pruner",
    "resolve_scorer",
    "sensitivity_scan",
    "sparsity_targets",
]
