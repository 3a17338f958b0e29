"""P4 of `pruneplug bench pruning`: round_to on the digits benchmark (quick run: structure and
arithmetic; the accuracies of one training epoch mean nothing)."""

from __future__ import annotations

import re

import pytest
from torch import nn

from pruneplug import data, engine, metrics, models
from pruneplug.benchmarks import pruning_widths
from pruneplug.benchmarks.pruning_structured import RECIPE, prune_ours


def mlp_macs(h1: int, h2: int) -> int:
    """The MLP 64-300-100-10's MACs with hidden widths h1-h2 (its three Linear layers)."""
    return 64 * h1 + h1 * h2 + h2 * 10


@pytest.fixture(scope="module")
def dense_and_splits() -> tuple[nn.Module, data.Splits]:
    splits = data.load_digits(seed=0)
    dense = models.mlp()
    engine.train(dense, splits.train, epochs=1, lr=0.05, seed=0, progress=False)
    return dense, splits


def test_round_to_rounds_the_hidden_widths_up(dense_and_splits):
    dense, splits = dense_and_splits
    widths = {
        r: pruning_widths.hidden(prune_ours(dense, 0.75, splits, RECIPE, r))
        for r in (1, 8, 16, 64, 128)
    }
    # 300 and 100 neurons lose 225 and 75; the rest is rounded up, never above the full width
    assert widths == {1: "75-25", 8: "80-32", 16: "80-32", 64: "128-64", 128: "128-100"}


def test_matched_amount_keeps_the_closest_macs(dense_and_splits):
    dense, splits = dense_and_splits
    x = splits.train.tensors[0][:1]

    def kept(amount: float) -> int:
        return metrics.macs(prune_ours(dense, amount, splits, RECIPE), x)

    target = mlp_macs(64, 64)  # round_to 64 at 90 %
    amount = pruning_widths.matched_amount(dense, target, splits, RECIPE)
    step = 1 / pruning_widths.MATCH_STEPS
    assert 0.5 < amount < 0.9
    best = abs(kept(amount) - target)
    assert best <= abs(kept(amount - step) - target)
    assert best <= abs(kept(amount + step) - target)
    # beyond what any amount keeps: the largest amount; below it: the smallest
    assert pruning_widths.matched_amount(dense, 0, splits, RECIPE) == 1 - step
    assert pruning_widths.matched_amount(dense, 10**9, splits, RECIPE) == 0.0


def test_p4_quick_table(capsys):
    pruning_widths.run(quick=True)
    out = capsys.readouterr().out
    assert out.startswith("P4  round_to (widths for tensor cores), MLP 64-300-100-10 on digits")
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines() if "90%" in line]
    assert [row[:4] for row in rows] == [
        ["90%", "1", "30-10", f"{50200 / mlp_macs(30, 10):.1f}x"],
        ["90%", "64", "64-64", f"{50200 / mlp_macs(64, 64):.1f}x"],
    ]
    assert rows[0][4:] == [rows[0][4], "-", "-", "-", "-", "-", "-"]
    for row in rows:
        mean, half = map(float, row[4].split(" ± "))
        assert 0 <= mean <= 100 and half >= 0
    *_, same_amount, matched, hidden1, reduction1, accuracy1, same_macs = rows[1]
    assert re.fullmatch(r"[+-]\d+\.\d\d ± \d+\.\d\d", same_amount)
    assert re.fullmatch(r"[+-]\d+\.\d\d ± \d+\.\d\d", same_macs)
    # round_to 1 at the matched amount removes about the MACs of round_to 64 at 90 %
    h1, h2 = map(int, hidden1.split("-"))
    assert reduction1 == f"{50200 / mlp_macs(h1, h2):.1f}x"
    assert abs(mlp_macs(h1, h2) - mlp_macs(64, 64)) < 0.05 * mlp_macs(64, 64)
    assert 0.5 < float(matched[:-1]) / 100 < 0.9
    # the paired differences are those of the printed means (each rounded to 0.1)
    assert float(same_macs.split(" ± ")[0]) == pytest.approx(
        float(rows[1][4].split(" ± ")[0]) - float(accuracy1.split(" ± ")[0]), abs=0.11
    )
    assert "3 distinct models x 2 seeds trained" in out
