"""ResultsExplorer: a sweep's results filtered, pooled over seeds, plotted, its Pareto front."""

from __future__ import annotations

import base64
import io
import math
import statistics
from typing import Any

import ipywidgets as w
import matplotlib.image
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from pruneplug.sweep import Results, Sweep, run, spread, t_quantile
from pruneplug.widgets import ResultsExplorer
from pruneplug.widgets.results import pareto_front

#: accuracy of each (scorer, amount) for seeds 0, 1, 2 - made up, so every number is known
ACCURACY = {
    ("magnitude", 0.5): [0.96, 0.97, 0.98],
    ("magnitude", 0.9): [0.90, 0.92, 0.94],
    ("random", 0.5): [0.90, 0.80, 0.85],
    ("random", 0.9): [0.30, 0.10, 0.20],
}
MACS = {0.5: 500, 0.9: 100}


def record(scorer: str, amount: float, seed: int, status: str = "ok") -> dict[str, Any]:
    config = {"scorer": scorer, "amount": amount, "seed": seed, "epochs": 3}
    ok = status == "ok"
    metrics = {
        "accuracy": ACCURACY[scorer, amount][seed] if ok else None,
        "sparsity": amount,
        "macs": MACS[amount],
        "latency_ms": 1.0 + seed / 10,  # varies over the seeds, like a timing
        "note": "text metrics are not offered as axes",
    }
    return {
        "key": f"{scorer}-{amount}-{seed}",
        "trial": "tests:made_up",
        "config": config,
        "status": status,
        "metrics": metrics if ok else None,
        "error": None if ok else {"type": "RuntimeError", "message": "boom", "traceback": ""},
        "time_s": 0.1,
    }


@pytest.fixture
def results() -> Results:
    records = [record(s, a, seed) for (s, a) in ACCURACY for seed in range(3)]
    return Results([*records, record("random", 0.5, 3, status="failed")])


def row_of(explorer: ResultsExplorer, scorer: str, amount: float) -> dict[str, Any]:
    (row,) = [r for r in explorer.result if (r["scorer"], r["amount"]) == (scorer, amount)]
    return row


# ----------------------------------------------------------------------------- statistics


def test_spread_is_mean_sample_std_and_t_interval():
    stats = spread([0.90, 0.92, 0.94])
    assert stats.mean == pytest.approx(0.92)
    assert stats.std == pytest.approx(0.02)  # divisor n - 1
    assert t_quantile(2) == pytest.approx(4.3027, abs=1e-4)  # Student's table, 95 %, df = 2
    assert stats.ci95 == pytest.approx(4.30265 * 0.02 / math.sqrt(3), rel=1e-5)
    assert spread([0.5]) == type(stats)(0.5, None, None, 1)  # one value: no spread
    with pytest.raises(ValueError, match="at least one value"):
        spread([])


def test_pareto_front_by_hand():
    # (cost, accuracy): lower cost and higher accuracy are better
    points = [(100, 0.90), (50, 0.80), (50, 0.70), (200, 0.85), (200, 0.95), (100, 0.90)]
    # (50, .7) loses to (50, .8); (200, .85) to (100, .9); the two (100, .9) tie: both stay
    assert pareto_front(points) == [True, True, False, False, True, True]
    # sparsity-like x, where more is better: (200, .95) now beats everything but itself
    assert pareto_front(points, x_higher=True) == [False, False, False, False, True, False]


# ----------------------------------------------------------------------------- the explorer


def test_rows_pool_the_seeds_and_match_the_summary(results):
    explorer = ResultsExplorer(results, x="macs")
    assert explorer.axes == ["amount", "scorer", "seed"]  # epochs does not vary: no filter
    assert explorer.group_keys == ["amount", "scorer"] and explorer.method == ["scorer"]
    summary = results.summary(group_by=["amount", "scorer"], metric="accuracy")
    assert len(explorer.result) == len(summary) == 4
    for row, expected in zip(explorer.result, summary, strict=True):
        assert (row["amount"], row["scorer"]) == (expected["amount"], expected["scorer"])
        assert row["n"] == expected["n"] == 3  # the failed trial is left out
        assert row["accuracy mean"] == pytest.approx(expected["mean"])
        assert row["accuracy std"] == pytest.approx(expected["std"])
        assert row["accuracy ci95"] == pytest.approx(t_quantile(2) * expected["std"] / math.sqrt(3))
        assert row["macs mean"] == MACS[row["amount"]] and row["macs std"] == 0
    assert row_of(explorer, "magnitude", 0.9)["method"] == "magnitude"


def test_error_bars_drawn_are_the_rows_numbers(results):
    explorer = ResultsExplorer(results, x="macs")

    def bars(explorer: ResultsExplorer) -> dict[tuple[float, float], float]:
        """Half-length of each drawn vertical error bar, by its centre."""
        ax = Figure().add_subplot(1, 1, 1)
        explorer.draw(ax)
        drawn = {}
        for container in ax.containers:
            assert isinstance(container, ErrorbarContainer)
            for (x0, low), (_, high) in container.lines[2][0].get_segments():
                drawn[round(x0, 6), round((low + high) / 2, 6)] = (high - low) / 2
        return drawn

    def expected(explorer: ResultsExplorer, err: str) -> dict[tuple[float, float], float]:
        return {
            (round(r["macs mean"], 6), round(r["accuracy mean"], 6)): r[f"accuracy {err}"]
            for r in explorer.result
        }

    assert bars(explorer) == pytest.approx(expected(explorer, "ci95"))
    explorer.error.value = "std"
    assert bars(explorer) == pytest.approx(expected(explorer, "std"))
    std = statistics.stdev(ACCURACY["random", 0.9])
    assert bars(explorer)[100, round(0.2, 6)] == pytest.approx(std)


def test_filters_change_the_rows(results):
    explorer = ResultsExplorer(results)
    assert isinstance(explorer.filters["scorer"], w.SelectMultiple)
    assert explorer.filters["scorer"].value == ("magnitude", "random")  # everything at first
    explorer.filters["scorer"].value = ("random",)  # as a click in the browser does
    assert {r["scorer"] for r in explorer.result} == {"random"} and len(explorer.result) == 2
    explorer.select(scorer=["magnitude", "random"], amount=0.9)
    assert [(r["scorer"], r["amount"]) for r in explorer.result] == [
        ("magnitude", 0.9),
        ("random", 0.9),
    ]
    explorer.select(seed=[0, 1])  # fewer seeds: the means change
    assert row_of(explorer, "random", 0.9)["n"] == 2
    assert row_of(explorer, "random", 0.9)["accuracy mean"] == pytest.approx(0.2)
    explorer.select(amount=[])
    assert explorer.result == [] and "nothing to show" in explorer.table.value


def test_x_and_y_switch_and_the_front_follows(results):
    explorer = ResultsExplorer(results, x="macs")
    front = {(r["scorer"], r["amount"]) for r in explorer.result if r["pareto"]}
    # fewer MACs is better: magnitude at 90 % (100 MACs) and at 50 % (most accurate)
    assert front == {("magnitude", 0.9), ("magnitude", 0.5)}
    explorer.x.value = "latency_ms"  # a metric that varies over the seeds gets x error bars too
    row = row_of(explorer, "random", 0.5)
    assert row["latency_ms mean"] == pytest.approx(1.1) and row["latency_ms std"] > 0
    explorer.x.value = "sparsity"  # more is better: magnitude 90 % beats magnitude 50 %
    explorer.select(scorer="magnitude", amount=[0.5, 0.9])
    assert {r["amount"]: r["pareto"] for r in explorer.result} == {0.5: True, 0.9: True}
    explorer.y.value = "macs"  # fewer MACs and more sparsity: 90 % wins both
    assert {r["amount"]: r["pareto"] for r in explorer.result} == {0.5: False, 0.9: True}
    assert "note" not in explorer.x.options and "amount" in explorer.x.options


def test_table_and_static_picture(results):
    explorer = ResultsExplorer(results, x="macs")
    assert "<th>accuracy ci95</th>" in explorer.table.value
    assert explorer.table.value.count("<td>yes</td>") == 2  # the two points on the front
    assert "macs ci95" not in explorer.table.value  # the same MACs for every seed: no error
    explorer.x.value = "latency_ms"
    assert "<th>latency_ms ci95</th>" in explorer.table.value
    assert explorer.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    bundle = explorer._repr_mimebundle_()
    assert bundle["text/plain"] == "ResultsExplorer (interactive: run in Jupyter)"
    assert "application/vnd.jupyter.widget-view+json" in bundle
    picture = matplotlib.image.imread(io.BytesIO(base64.b64decode(bundle["image/png"])))
    assert picture.ndim == 3 and picture.shape[1] > picture.shape[0] > 100


def test_bad_names_give_clear_errors(results):
    with pytest.raises(ValueError, match="x='acc' is not a numeric metric.*accuracy"):
        ResultsExplorer(results, x="acc")
    with pytest.raises(ValueError, match="y='note' is not a numeric"):
        ResultsExplorer(results, y="note")
    with pytest.raises(ValueError, match="method keys \\['pruner'\\].*amount, scorer"):
        ResultsExplorer(results, method=["pruner"])
    with pytest.raises(ValueError, match="replicate='run'.*replicate=None"):
        ResultsExplorer(results, replicate="run")
    with pytest.raises(ValueError, match="error='sem': choose one of ci95, std"):
        ResultsExplorer(results, error="sem")
    explorer = ResultsExplorer(results)
    with pytest.raises(ValueError, match="no axis 'pruner'.*amount, scorer, seed"):
        explorer.select(pruner="structured")
    with pytest.raises(ValueError, match="axis 'scorer' has no value 'taylor'; it has magnitude"):
        explorer.select(scorer="taylor")
    failed = Results([record("random", 0.5, 0, status="failed")])
    with pytest.raises(ValueError, match="no successful trials.*1 failed.*retry_failed=True"):
        ResultsExplorer(failed)


def test_every_trial_a_point_without_replicates(results):
    explorer = ResultsExplorer(results, replicate=None)
    assert len(explorer.result) == 12 and {r["n"] for r in explorer.result} == {1}
    assert all(r["accuracy ci95"] is None for r in explorer.result)
    assert explorer.static_png()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- a real sweep


def made_up_trial(config: dict[str, Any]) -> dict[str, float]:
    """A trial whose accuracy falls with the amount, less for magnitude, noisy by seed."""
    drop = {"magnitude": 0.1, "random": 0.8}[config["scorer"]] * config["amount"]
    return {"accuracy": 0.95 - drop + 0.01 * (config["seed"] - 1), "sparsity": config["amount"]}


def test_explores_what_a_sweep_ran(tmp_path):
    sweep = Sweep(
        trial=made_up_trial,
        axes={"scorer": ["magnitude", "random"], "amount": [0.5, 0.9], "seed": [0, 1, 2]},
    )
    results = run(sweep, backend="inprocess", store=tmp_path / "r.jsonl", progress=False)
    explorer = ResultsExplorer(results)
    assert [(r["method"], r["amount"], r["n"]) for r in explorer.result] == [
        ("magnitude", 0.5, 3),
        ("random", 0.5, 3),
        ("magnitude", 0.9, 3),
        ("random", 0.9, 3),
    ]
    assert row_of(explorer, "random", 0.9)["accuracy mean"] == pytest.approx(0.95 - 0.72)
    assert row_of(explorer, "magnitude", 0.9)["accuracy std"] == pytest.approx(0.01)
    assert [r["pareto"] for r in explorer.result] == [True, False, True, False]
