"""``pruneplug bench widgets``: how fast the pruning explorer answers a slider move.

The pruning explorer caches the trained model and its scores, so moving the *amount* slider
re-prunes a copy, re-evaluates it on the test split, counts MACs and redraws the PNG. This
benchmark trains the course's digits MLP and CNN, moves the slider through a fixed series of
amounts and prints the median (and 90th percentile) wall time per move for the unstructured
and the structured pruner, next to the target: a median of at most 300 ms.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from pruneplug import data, engine, models
from pruneplug.widgets import PruningExplorer

#: Median latency per slider move that the course promises (milliseconds).
TARGET_MS = 300.0
#: Training recipes of the course's reference models (chapters 00-03).
RECIPES: dict[str, dict[str, Any]] = {
    "mlp": {"epochs": 20, "lr": 0.1},
    "cnn": {"epochs": 8, "lr": 0.05, "schedule": "cosine"},
}


def slider_moves(explorer: PruningExplorer, amounts: list[float]) -> list[float]:
    """Seconds taken by each move of the amount slider (callback included, as in Jupyter)."""
    times = []
    for amount in amounts:
        start = time.perf_counter()
        explorer.amount.value = amount
        times.append(time.perf_counter() - start)
    return times


def run(quick: bool = False) -> None:
    """Print the latency table; ``quick`` trains for one epoch and moves the slider 4 times."""
    torch.manual_seed(0)
    digits = data.load_digits(seed=0)
    moves = 4 if quick else 30
    amounts = [round(0.05 + 0.9 * i / max(1, moves - 1), 2) for i in range(moves)]
    print("pruneplug bench widgets: pruning explorer on the digits models, one slider move =")
    print("re-prune a copy + evaluate on the test split (397 images) + count MACs + redraw PNG")
    print(
        f"{moves} moves per row, amounts {amounts[0]} .. {amounts[-1]}; target: median <= "
        f"{TARGET_MS:.0f} ms"
    )
    header = f"{'model':6s} {'pruner':13s} {'median ms':>10s} {'p90 ms':>8s}  target met"
    print(header)
    print("-" * len(header))
    for name, recipe in RECIPES.items():
        model = models.build(name)
        engine.train(
            model,
            digits.train,
            **{**recipe, "epochs": 1 if quick else recipe["epochs"]},
            progress=False,
        )
        for pruner in ("unstructured", "structured"):
            explorer = PruningExplorer(
                model, digits.test, scorers=["magnitude"], pruners=[pruner], amount=0.0
            )
            times = sorted(1000 * t for t in slider_moves(explorer, amounts))
            median = statistics.median(times)
            p90 = times[min(len(times) - 1, round(0.9 * (len(times) - 1)))]
            met = "yes" if median <= TARGET_MS else "NO"
            print(f"{name:6s} {pruner:13s} {median:10.1f} {p90:8.1f}  {met}")
