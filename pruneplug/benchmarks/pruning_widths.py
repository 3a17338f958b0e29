"""Row P4 of ``pruneplug bench pruning``: what rounding widths for tensor cores costs in accuracy.

Tensor cores (and CPU vector units) run matrix products fastest when their dimensions are
multiples of 8, 16 or 64, so the structured pruner's ``round_to`` rounds each pruned group's kept
width **up** to a multiple of it (never above the original width); D1b of ``pruneplug bench
deploy`` measures which multiple pays on a GPU. P4 measures what it does to accuracy on P2's
digits benchmark (:mod:`~pruneplug.benchmarks.pruning_structured`): the same dense MLP
64-300-100-10 (30 epochs on the seeded split), the same amounts of hidden neurons removed, the
same documented recipe (:data:`~pruneplug.benchmarks.pruning_structured.RECIPE`: magnitude
scores, then 10 epochs of distillation from the dense model), over more fine-tuning seeds.

Rounding up keeps more neurons, so at the same nominal amount a rounded model is larger and any
change in accuracy is paid for in MACs. Each rounded model is therefore compared twice, both
times paired by seed (same seed, same batch order: the per-seed differences cancel the noise the
two runs share):

* **same amount**: against ``round_to`` 1 at the same amount - what rounding changes, MACs and
  all;
* **same MACs**: against ``round_to`` 1 at the amount whose MACs come closest to the rounded
  model's (searched on a 0.1 % grid) - like with like: does spending the MACs on rounding cost
  accuracy against spending them on a smaller amount?

Models with the same widths are the same model (the same scores keep the same neurons), so each
set of widths is trained once per seed and shared by the rows that have it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn

from pruneplug import data, engine, metrics
from pruneplug.sweep import spread

from .pruning_structured import (
    P2_AMOUNTS,
    RECIPE,
    Recipe,
    budget,
    dense_mlp,
    hidden_layers,
    ours,
    prune_ours,
    table,
)

#: ``round_to`` values compared (1 = no rounding, P2's setting).
ROUND_TOS = (1, 8, 16, 64)
#: Fine-tuning seeds: a run takes well under a second, so P4 affords more than P2's three.
SEEDS = tuple(range(20))
#: Resolution of the amount that matches a rounded model's MACs with ``round_to`` 1.
MATCH_STEPS = 1000


@dataclass(frozen=True)
class Grid:
    """The rows and seeds of a run (``quick`` shrinks them for the test suite)."""

    round_tos: tuple[int, ...]
    amounts: tuple[float, ...]
    seeds: tuple[int, ...]


def grid(quick: bool) -> Grid:
    """The full grid, or two rows and two seeds for the test suite."""
    if quick:  # two seeds: the fewest that give an interval
        return Grid(round_tos=(1, 64), amounts=(0.9,), seeds=(0, 1))
    return Grid(round_tos=ROUND_TOS, amounts=P2_AMOUNTS, seeds=SEEDS)


def hidden(model: nn.Module) -> str:
    """The MLP's hidden widths, e.g. ``150-50``."""
    return "-".join(str(layer.out_features) for layer in hidden_layers(model))


def matched_amount(dense: nn.Module, target: int, splits: data.Splits, recipe: Recipe) -> float:
    """The amount (a multiple of ``1 / MATCH_STEPS``) at which ``round_to`` 1 keeps the MACs
    closest to ``target`` (ties: the smaller amount).

    MACs fall as the amount grows, so a bisection finds the first step at or below ``target``;
    it or the step before is the closest.
    """
    x = splits.train.tensors[0][:1]

    def macs(step: int) -> int:
        return metrics.macs(prune_ours(dense, step / MATCH_STEPS, splits, recipe), x)

    low, high = 0, MATCH_STEPS - 1
    if macs(high) > target:
        return high / MATCH_STEPS
    while low < high:  # the first step whose MACs are at most the target
        middle = (low + high) // 2
        if macs(middle) <= target:
            high = middle
        else:
            low = middle + 1
    if low and macs(low - 1) - target <= target - macs(low):
        low -= 1
    return low / MATCH_STEPS


def interval(values: list[float], signed: bool = False) -> str:
    """``mean ± 95 % half-width`` of per-seed values (``signed``: a difference, 2 decimals)."""
    s = spread(values)
    assert s.ci95 is not None  # every grid has two seeds or more
    return f"{s.mean:+.2f} ± {s.ci95:.2f}" if signed else f"{s.mean:.1f} ± {s.ci95:.1f}"


def paired(a: list[float], b: list[float]) -> str:
    """Mean and 95 % interval of the per-seed differences ``a - b``."""
    return interval([x - y for x, y in zip(a, b, strict=True)], signed=True)


def p4(quick: bool) -> str:
    run, cells = budget(quick), grid(quick)
    load = os.getloadavg()[0]
    splits = data.load_digits(seed=0)
    dense = dense_mlp(splits, run)
    dense_acc = 100 * engine.evaluate(dense, splits.test)["accuracy"]
    x = splits.train.tensors[0][:1]
    dense_macs = metrics.macs(dense, x)
    trained: dict[str, list[float]] = {}  # hidden widths -> accuracy per seed

    def measured(amount: float, round_to: int) -> tuple[str, int, list[float]]:
        """Hidden widths, MACs and per-seed accuracies of one pruned model."""
        model = prune_ours(dense, amount, splits, RECIPE, round_to)
        widths = hidden(model)
        if widths not in trained:
            trained[widths] = [
                ours(dense, amount, splits, run, seed, RECIPE, round_to) for seed in cells.seeds
            ]
        return widths, metrics.macs(model, x), trained[widths]

    rows = []
    for amount in cells.amounts:
        _, _, base = measured(amount, 1)
        for round_to in cells.round_tos:
            widths, macs, accs = measured(amount, round_to)
            row = [f"{amount:.0%}", str(round_to), widths, f"{dense_macs / macs:.1f}x"]
            row.append(interval(accs))
            if round_to == 1:
                rows.append(row + ["-"] * 6)
                continue
            matched = matched_amount(dense, macs, splits, RECIPE)
            widths1, macs1, accs1 = measured(matched, 1)
            rows.append(
                row
                + [
                    paired(accs, base),
                    f"{matched:.1%}",
                    widths1,
                    f"{dense_macs / macs1:.1f}x",
                    interval(accs1),
                    paired(accs, accs1),
                ]
            )
    header = [
        "removed",
        "round_to",
        "hidden",
        "MACs red.",
        "accuracy",
        "vs r1 same amount",
        "r1 same MACs: removed",
        "r1 hidden",
        "r1 MACs red.",
        "r1 accuracy",
        "vs r1 same MACs",
    ]
    n_train, n_test = len(splits.train), len(splits.test)
    notes = [
        f"P2's digits benchmark: dense MLP {dense_acc:.1f} % (test, {n_test} samples); each "
        f"pruned model: structured pruner (local) with round_to, then P2's recipe "
        f"({run.epochs} epochs, distillation) on the {n_train:,} training samples",
        "removed: the pruner's amount; round_to rounds each hidden width up to a multiple of it "
        "(at most the full width); hidden: the widths kept; MACs red.: dense MACs / pruned MACs",
        f"accuracy: test accuracy in %, mean ± 95 % interval (Student t) over {len(cells.seeds)} "
        "fine-tuning seeds on one data split (the interval is the seeds' spread, not the split's)",
        "vs r1 same amount: accuracy minus round_to 1's at the same amount, paired by seed (mean "
        "± 95 %): rounding's effect, paid for by the MACs it keeps",
        "r1 same MACs: round_to 1 at the amount (0.1 % grid) whose MACs come closest to the "
        "rounded model's; vs r1 same MACs: the rounded model's accuracy minus that one's, paired "
        "by seed - like with like. An interval that excludes 0 is a difference beyond seed noise",
        "rows with the same hidden widths are the same model (same scores, same neurons kept): "
        "trained once per seed, printed in each row",
        f"{len(trained)} distinct models x {len(cells.seeds)} seeds trained; load average "
        f"{load:.2f} before, {os.getloadavg()[0]:.2f} after",
    ]
    title = "P4  round_to (widths for tensor cores), MLP 64-300-100-10 on digits: accuracy (%)"
    return table(title, header, rows, notes)


def run(quick: bool = False) -> None:
    """Print the P4 table (``quick``: a tiny run for the test suite)."""
    print(p4(quick))
