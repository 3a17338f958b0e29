"""Sweeps: expansion, hashing, validation, the store, the backends, crashes and resuming."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest

from pruneplug.sweep import (
    Results,
    ResultsStore,
    StoreWarning,
    Sweep,
    SweepConfigError,
    TrialError,
    bench,
    config_hash,
    run,
    toy_trial,
)
from pruneplug.sweep.cli import main as sweep_main

# ----------------------------------------------------------------------------- trial functions
# Module level, so pool workers import them by name. Each call leaves a file in config["dir"],
# so tests count calls across processes.


def _count(config: dict[str, Any]) -> None:
    calls = Path(config["dir"]) / "calls"
    calls.mkdir(exist_ok=True)
    (calls / f"{config['x']}.{uuid.uuid4().hex}").touch()


def calls(folder: Path, x: int | None = None) -> int:
    """How often the trial ran (for ``x``, or in all)."""
    return len(list((folder / "calls").glob("*" if x is None else f"{x}.*")))


def counted_trial(config: dict[str, Any]) -> dict[str, Any]:
    """``score = x * y``; raises for ``x == -1``; ``x == -2`` fails only on the first call."""
    _count(config)
    if config["x"] == -1:
        raise ValueError(f"x={config['x']} is cursed")
    marker = Path(config["dir"]) / f"failed-once-{config['x']}"
    if config["x"] == -2 and not marker.exists():
        marker.touch()
        raise RuntimeError("first call fails")
    return {"score": config["x"] * config["y"]}


def optimiser_trial(config: dict[str, Any]) -> dict[str, Any]:
    """``score = 10 * opt.lr`` (the axis ``opt`` is a list of tables)."""
    return {"score": 10 * config["opt.lr"]}


def exiting_trial(config: dict[str, Any]) -> dict[str, Any]:
    """Calls ``sys.exit(3)`` for ``x == 0`` (as a script's argparse would on bad arguments)."""
    if config["x"] == 0:
        sys.exit(3)
    return {"score": config["x"]}


def killing_trial(config: dict[str, Any]) -> dict[str, Any]:
    """SIGKILLs its own worker for ``x == kill_x`` (first call only, unless ``always``).

    Raises for ``x == raise_x``.
    """
    _count(config)
    if config["x"] == config.get("raise_x"):
        raise ValueError("raised on purpose")
    marker = Path(config["dir"]) / f"killed-{config['x']}"
    if config["x"] == config.get("kill_x") and (config.get("always") or not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return {"score": config["x"]}


def _statuses(results: Results) -> dict[Any, str]:
    return {r["config"]["x"]: r["status"] for r in results.records}


# ----------------------------------------------------------------------------- declaration


def test_config_hash_is_stable_across_runs_and_key_order() -> None:
    config = {"amount": 0.5, "scorer": "magnitude", "scorer.p": 2, "seed": 0}
    reordered = dict(reversed(list(config.items())))
    key = config_hash("pruneplug.sweep.standard:standard_trial", config)
    assert key == config_hash("pruneplug.sweep.standard:standard_trial", reordered)
    # a literal: the same in every process and Python version (canonical JSON -> sha256)
    assert key == "5723d2558384531c7dc75a6d1b4ac7c1cde85adbfa9246761b215abc97efb735"
    assert key != config_hash("pruneplug.sweep.standard:standard_trial", {**config, "seed": 1})
    assert key != config_hash("other:trial", config)


def test_grid_random_and_table_valued_axes() -> None:
    grid = Sweep(
        trial=toy_trial,
        axes={"x": [1, 2, 3], "y": [10, 20], "pruner": [{"name": "a"}, {"name": "b", "k": 1}]},
        fixed={"work": 1, "scorer": {"p": 2}},
    )
    configs = grid.configs()
    assert len(configs) == 12
    assert {"x": 1, "y": 10, "pruner": "b", "pruner.k": 1, "work": 1, "scorer.p": 2} in configs
    assert all("pruner.k" not in c for c in configs if c["pruner"] == "a")

    def draw(seed: int) -> list[dict[str, Any]]:
        axes = {
            "x": {"uniform": [0.5, 0.99]},
            "y": {"randint": [1, 4]},
            "lr": {"loguniform": [1e-3, 1e-1]},
        }
        return Sweep(trial=toy_trial, axes=axes, mode="random", samples=5, seed=seed).configs()

    first = draw(0)
    assert first == draw(0) and first != draw(1) and len(first) == 5
    assert all(0.5 <= c["x"] <= 0.99 and 1 <= c["y"] <= 4 and 1e-3 <= c["lr"] <= 0.1 for c in first)


def test_validation_reports_every_problem_at_once_and_runs_nothing(tmp_path: Path) -> None:
    sweep = Sweep(
        axes={
            "scorer": ["magnitude", "no_such_scorer"],
            "pruner": [{"name": "structured"}, {"name": "unstructured", "scope": "sideways"}],
            "amount": [0.5, 1.5],
        },
        fixed={"schedule": "gradual", "scorr": 1, "recovery": "distill", "recovery.rounds": 2},
    )
    store = tmp_path / "results.jsonl"
    with pytest.raises(SweepConfigError) as caught:
        run(sweep, backend="inprocess", store=store, progress=False)
    text = str(caught.value)
    assert len(caught.value.problems) == 6, text
    assert "unknown key 'scorr'; did you mean 'scorer'?" in text
    assert "no scorer called 'no_such_scorer'; available: " in text  # the registry's message
    assert "scope='sideways' is not an allowed choice" in text  # the plugin's own message
    assert "amount=1.5" in text and "(4 of 8 trials)" in text
    assert "'gradual' needs a mask (unstructured) pruner" in text  # impossible combination
    assert "recovery 'distill' has no parameter 'rounds'" in text
    assert not store.exists()


def test_malformed_files_and_a_folder_for_a_store_are_problems_not_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SweepConfigError, match=r"axes = 3 is not a table: write \[axes\]"):
        Sweep.from_dict({"axes": 3, "fixed": {"epochs": 1}})
    with pytest.raises(SweepConfigError, match="is a folder: name a file in it"):
        Sweep(axes={"seed": [0]}, store=tmp_path).plan()
    assert sweep_main([str(tmp_path)]) == 2  # the config itself a folder
    assert "cannot read the sweep file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "axes, fixed, problem",
    [
        ({"pruner": [{"name": "unstructured", "scope": "local"}]}, {"pruner.scope": "global"},
         "'pruner.scope' is fixed and set by axis 'pruner'; keep one"),
        ({"pruner": [{"name": "unstructured", "scope": "local"}], "pruner.scope": ["global"]}, {},
         "axes 'pruner' and 'pruner.scope' both set 'pruner.scope'; keep one"),
        ({"amount": [0.5]}, {"scorer.p": 1, "scorer": {"p": 2}},
         "fixed sets 'scorer.p' twice (dotted and as a table); keep one"),
        ({"scorer": [{}]}, {}, "axis 'scorer' has an empty table {}, which sets nothing"),
        ({"lr": [1, 1.0]}, {}, "axis 'lr' has 1 and 1.0, one number spelled two ways"),
        ({"amount": [0.5]}, {"recovery.epochs": 0}, "recovery.epochs=0: give a whole number >= 1"),
        ({"amount": [0.5]}, {"pruner": "n_m"}, "pruner 'n_m' removes what its own parameters"),
    ],
)  # fmt: skip
def test_settings_that_would_be_overwritten_or_fail_every_trial_are_problems(
    axes: dict, fixed: dict, problem: str
) -> None:
    with pytest.raises(SweepConfigError) as caught:
        Sweep(axes=axes, fixed=fixed).plan("inprocess")
    assert caught.value.problems == [problem] or problem in str(caught.value), caught.value


def test_the_summary_groups_by_every_key_that_varies(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text(
        """
[sweep]
trial = "test_sweep:optimiser_trial"
store = "results.jsonl"
[axes]
opt = [{name = "sgd", lr = 0.1}, {name = "sgd", lr = 0.01}]
seed = [0, 1]
"""
    )
    assert sweep_main([str(config), "--backend", "inprocess", "--metric", "score"]) == 0
    out = capsys.readouterr().out
    assert "4 trial(s): 4 ran" in out and "opt.lr" in out  # grouped by the key in the tables


def test_pool_refuses_a_trial_it_cannot_send() -> None:
    with pytest.raises(SweepConfigError, match="cannot be sent to worker processes"):
        Sweep(trial=lambda c: {"v": 1}, axes={"x": [1]}).plan("pool")


def test_toml_sweep_through_the_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text(
        f"""
[sweep]
trial = "test_sweep:counted_trial"
store = "out/results.jsonl"

[fixed]
dir = "{tmp_path.as_posix()}"

[axes]
x = [1, 2]
y = [3, 5]
"""
    )
    assert sweep_main([str(config), "--backend", "inprocess", "--metric", "score"]) == 0
    out = capsys.readouterr().out
    assert "4 trial(s): 4 ran, 0 cached, 0 failed" in out
    assert (tmp_path / "out" / "results.jsonl").exists()  # relative to the TOML file
    assert sweep_main([str(config), "--backend", "inprocess", "--group-by", "x"]) == 2
    assert "no metric 'accuracy'; the metrics are score" in capsys.readouterr().err
    assert calls(tmp_path) == 4  # the second command ran nothing
    config.write_text(config.read_text().replace("x = [1, 2]", "x = [1, -1]"))
    assert sweep_main([str(config), "--backend", "inprocess", "--stop-on-error"]) == 1
    assert "failed with ValueError: x=-1 is cursed" in capsys.readouterr().err
    config.write_text('[sweep]\ntrial = "nowhere:nothing"\nmode = "grid"\n[axes]\nx = 1\n')
    assert sweep_main([str(config), "--backend", "inprocess"]) == 2
    assert "cannot import 'nowhere'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- running


def test_inprocess_and_pool_give_the_same_table(tmp_path: Path) -> None:
    sweep = Sweep(
        trial=counted_trial, axes={"x": [3, -1, 1, 2], "y": [1, 2]}, fixed={"dir": str(tmp_path)}
    )
    here = run(sweep, backend="inprocess", store=tmp_path / "a.jsonl", progress=False)
    pool = run(sweep, backend="pool", workers=2, store=tmp_path / "b.jsonl", progress=False)
    assert here.to_rows(timing=False) == pool.to_rows(timing=False)
    assert [r["x"] for r in pool.to_rows()] == [-1, -1, 1, 1, 2, 2, 3, 3]  # sorted by config
    assert len(pool.ok) == 6 and len(pool.failed) == 2
    error = pool.failed[0]["error"]
    assert (error["type"], error["message"]) == ("ValueError", "x=-1 is cursed")
    summary = pool.summary("x", "score", over="y")  # y: the repeats of a setting
    assert summary[-1] == {
        "x": 3,
        "metric": "score",
        "mean": 4.5,
        "std": pytest.approx(3 / 2**0.5),
        "ci95": pytest.approx(12.706 * (3 / 2**0.5) / 2**0.5, rel=1e-4),  # t_0.975,1 = 12.706
        "n": 2,
    }
    assert [row["x"] for row in summary] == [1, 2, 3]  # failed trials are left out


def score_trial(config: dict[str, Any]) -> dict[str, Any]:
    """``score = x + seed / 10`` (in process only: no files, no counting)."""
    return {"score": config["x"] + config["seed"] / 10}


def test_summary_pools_the_seeds_only_unless_told(tmp_path: Path) -> None:
    sweep = Sweep(trial=score_trial, axes={"x": [1, 2], "seed": [0, 1, 2], "y": ["a", "b"]})
    results = run(sweep, backend="inprocess", store=":memory:", progress=False)
    with pytest.raises(ValueError, match=r"differ in y, not only in \['seed'\]: add y to group_by"):
        results.summary("x", "score")
    by_x_y = results.spreads(["x", "y"], "score")
    assert sorted(by_x_y) == [(1, "a"), (1, "b"), (2, "a"), (2, "b")]
    assert by_x_y[2, "b"].mean == pytest.approx(2.1) and by_x_y[2, "b"].n == 3
    assert by_x_y[2, "b"].std == pytest.approx(0.1)
    assert by_x_y[2, "b"].ci95 == pytest.approx(4.3027 * 0.1 / 3**0.5, rel=1e-4)
    pooled = results.spreads("x", "score", over=["seed", "y"])  # asked for: six trials each
    assert pooled[1].n == 6 and pooled[1].mean == pytest.approx(1.1)
    rows = results.summary(["x", "y"], "score")
    assert [(r["x"], r["y"], r["mean"]) for r in rows] == [
        (x, y, pytest.approx(x + 0.1)) for x in (1, 2) for y in ("a", "b")
    ]


def test_memory_store_writes_nothing_and_skips_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = Sweep(trial=score_trial, axes={"x": [1, 2]}, fixed={"seed": 0})
    first = run(sweep, backend="inprocess", store=":memory:", progress=False)
    again = run(sweep, backend="inprocess", store=":memory:", progress=False)
    assert (first.ran, again.ran, again.cached) == (2, 2, 0)  # each run has its own memory
    assert first.to_rows(timing=False) == again.to_rows(timing=False)
    assert list(tmp_path.iterdir()) == []


def test_rerun_does_nothing_twice_and_retries_failed_only_when_asked(tmp_path: Path) -> None:
    sweep = Sweep(trial=counted_trial, axes={"x": [-2, 1, 2]}, fixed={"y": 1, "dir": str(tmp_path)})
    store = tmp_path / "results.jsonl"
    first = run(sweep, backend="inprocess", store=store, progress=False)
    assert (first.ran, first.cached, _statuses(first)) == (3, 0, {-2: "failed", 1: "ok", 2: "ok"})
    again = run(sweep, backend="inprocess", store=store, progress=False)
    assert (again.ran, again.cached, calls(tmp_path)) == (0, 3, 3)
    assert again.to_rows(timing=False) == first.to_rows(timing=False)
    retried = run(sweep, backend="inprocess", store=store, retry_failed=True, progress=False)
    assert (retried.ran, calls(tmp_path, -2), calls(tmp_path)) == (1, 2, 4)
    assert _statuses(retried) == {-2: "ok", 1: "ok", 2: "ok"}
    assert len(Results.load(store).records) == 3  # the later record of a key wins


NEEDS_RAY = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason='needs `pip install "pruneplug[ray]"`'
)


@pytest.mark.parametrize(
    "backend", ["pool", pytest.param("ray", marks=[pytest.mark.slow, NEEDS_RAY])]
)
def test_killed_worker_is_retried_and_raising_trial_recorded(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # workers import the trial by module name: let them (and a local Ray) find this file
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    fixed = {"dir": str(tmp_path), "kill_x": 2, "raise_x": 3}
    sweep = Sweep(trial=killing_trial, axes={"x": [0, 1, 2, 3, 4]}, fixed=fixed)
    store = tmp_path / "results.jsonl"
    first = run(sweep, backend=backend, workers=2, store=store, progress=False)
    assert _statuses(first) == {0: "ok", 1: "ok", 2: "ok", 3: "failed", 4: "ok"}
    assert first.failed[0]["error"]["message"] == "raised on purpose"
    assert calls(tmp_path, 2) == 2  # killed, then retried (a fresh pool; Ray's task retry)
    assert len(ResultsStore(store).records) == 5
    before = calls(tmp_path)
    again = run(sweep, backend=backend, workers=2, store=store, progress=False)
    assert (again.ran, again.cached, calls(tmp_path)) == (0, 5, before)  # nothing twice

    always = {"dir": str(tmp_path), "kill_x": 6, "always": True}
    sweep = Sweep(trial=killing_trial, axes={"x": [6, 7]}, fixed=always)
    gave_up = run(sweep, backend=backend, workers=1, store=store, max_retries=1, progress=False)
    assert _statuses(gave_up) == {6: "failed", 7: "ok"}
    assert gave_up.failed[0]["error"]["type"] == "WorkerCrashed"
    assert (calls(tmp_path, 6), calls(tmp_path, 7)) == (2, 1)  # one try and one retry
    assert len(ResultsStore(store).records) == 7  # nothing lost


def test_torn_and_corrupt_results_file_keeps_finished_trials(tmp_path: Path) -> None:
    sweep = Sweep(trial=counted_trial, axes={"x": [1, 2, 3]}, fixed={"y": 2, "dir": str(tmp_path)})
    store = tmp_path / "results.jsonl"
    run(sweep, backend="inprocess", store=store, progress=False)
    lines = store.read_bytes().splitlines(keepends=True)
    torn_x = json.loads(lines[2])["config"]["x"]
    store.write_bytes(lines[0] + b"{not json\n" + lines[1] + lines[2][:25])  # crash mid-write
    with pytest.warns(StoreWarning) as caught:
        resumed = run(sweep, backend="inprocess", store=store, progress=False)
    messages = [str(w.message) for w in caught]
    assert any("only partly written" in m for m in messages)
    assert any("line 2: not valid JSON" in m for m in messages)
    assert (resumed.ran, resumed.cached) == (1, 2)
    assert calls(tmp_path, torn_x) == 2 and calls(tmp_path) == 4
    assert (tmp_path / "results.jsonl.torn").read_bytes() == lines[2][:25] + b"\n"
    assert [r["metrics"]["score"] for r in resumed.records] == [2, 4, 6]


def test_a_reader_never_cuts_a_line_a_driver_may_still_be_writing(tmp_path: Path) -> None:
    sweep = Sweep(trial=counted_trial, axes={"x": [1, 2]}, fixed={"y": 2, "dir": str(tmp_path)})
    store = tmp_path / "results.jsonl"
    run(sweep, backend="inprocess", store=store, progress=False)
    lines = store.read_bytes().splitlines(keepends=True)
    store.write_bytes(lines[0] + lines[1][:20])  # the driver is halfway through a line
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reader says nothing and changes nothing
        assert len(Results.load(store).records) == 1
    assert store.read_bytes() == lines[0] + lines[1][:20]


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl locks are POSIX")
def test_a_second_driver_on_the_same_store_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "results.jsonl"
    sweep = Sweep(trial=counted_trial, axes={"x": [1]}, fixed={"y": 2, "dir": str(tmp_path)})
    with ResultsStore.writing(store):  # the first driver, mid-run
        with pytest.raises(OSError, match=r"another sweep is writing .*results.jsonl"):
            run(sweep, backend="inprocess", store=store, progress=False)
    assert run(sweep, backend="inprocess", store=store, progress=False).ran == 1  # released


@pytest.mark.parametrize("backend", ["inprocess", "pool"])
def test_a_trial_that_calls_sys_exit_fails_alone(tmp_path: Path, backend: str) -> None:
    sweep = Sweep(trial=exiting_trial, axes={"x": [0, 1]})
    results = run(sweep, backend=backend, workers=1, store=tmp_path / "r.jsonl", progress=False)
    assert _statuses(results) == {0: "failed", 1: "ok"}
    (error,) = [r["error"] for r in results.records if r["status"] == "failed"]
    assert (error["type"], error["message"]) == ("SystemExit", "the trial called sys.exit(3)")


# ----------------------------------------------------------------------------- real trials


def test_standard_trial_one_epoch_mlp(tmp_path: Path) -> None:
    sweep = Sweep(
        axes={"amount": [0.5]},
        fixed={"epochs": 1, "recovery": "none", "scorer": "magnitude", "pruner": "unstructured"},
    )
    (record,) = run(sweep, backend="inprocess", store=tmp_path / "r.jsonl", progress=False).records
    assert record["status"] == "ok", record["error"]
    got = record["metrics"]
    assert got["sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert (got["parameters"], got["dense_parameters"], got["macs"]) == (50_610, 50_610, 50_200)
    assert got["nonzero"] < 0.55 * got["parameters"]
    assert 0.3 < got["dense_accuracy"] <= 1 and 0.1 < got["accuracy"] <= 1


@pytest.mark.slow
@NEEDS_RAY
def test_ray_gives_the_same_table(tmp_path: Path) -> None:
    sweep = Sweep(trial=toy_trial, axes={"x": [1, 2, 3], "y": [2]}, fixed={"work": 10})
    here = run(sweep, backend="inprocess", store=tmp_path / "a.jsonl", progress=False)
    ray = run(sweep, backend="ray", workers=2, store=tmp_path / "b.jsonl", progress=False)
    assert ray.to_rows(timing=False) == here.to_rows(timing=False)
    assert [r["metrics"]["score"] for r in ray.records] == [2, 4, 6]


def test_bench_sweep_reports_every_backend(capsys: pytest.CaptureFixture) -> None:
    from pruneplug.cli import main

    assert main(["bench", "sweep", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "sweep of 8 toy trials" in out and "overhead ms/trial" in out
    table = {line.split()[0] for line in out.splitlines()[3:] if line.strip()}
    assert {"inprocess", "pool"} <= table  # a row per backend measured
    rows = bench(quick=True)
    expected = {"inprocess", "pool"} | ({"ray"} if importlib.util.find_spec("ray") else set())
    assert set(rows) == expected
    assert rows["inprocess"]["workers"] == 1 and rows["pool"]["workers"] >= 1
    for row in rows.values():
        assert row["start_s"] >= 0 and row["cold_s"] > 0 and row["warm_s"] > 0
        assert row["per_min"] == pytest.approx(60 * 8 / row["warm_s"])
        assert row["overhead_ms"] == pytest.approx(
            1000 * (row["warm_s"] * row["workers"] - rows["inprocess"]["warm_s"]) / 8
        )


def test_pool_from_an_unguarded_script_names_the_fix(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from pruneplug.sweep import Sweep, run\n"
        "sweep = Sweep(trial='pruneplug.sweep:toy_trial', axes={'x': [1, 2], 'y': [1]})\n"
        "run(sweep, store=':memory:', workers=2, progress=False)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]  # the driver's error, after the workers'
    assert last.startswith("pruneplug.sweep.runner.PoolStartError: the process pool's workers")
    assert 'put the call under `if __name__ == "__main__":`' in last
    assert "leaked" not in done.stderr and "An attempt has been made" not in done.stderr


def sleepy_trial(config: dict[str, Any]) -> dict[str, Any]:
    """Sleeps ``config["sleep"]`` seconds."""
    time.sleep(config["sleep"])
    return {"slept": config["sleep"]}


def test_ctrl_c_returns_at_once_and_keeps_finished_trials(tmp_path: Path) -> None:
    sweep = Sweep(trial=sleepy_trial, axes={"sleep": [0.0, 0.01, 40.0, 41.0]})
    store = tmp_path / "results.jsonl"
    interrupted: list[float] = []
    returned = threading.Event()  # the sweep ended on its own: no Ctrl-C may follow

    def ctrl_c_once_the_quick_trials_are_stored() -> None:
        """Ctrl-C to this process only (as a notebook's "interrupt the kernel"), while the two
        long trials run: after the quick ones are stored, however long the pool took to start."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not returned.is_set():
            if store.exists() and len(store.read_text().splitlines()) >= 2:
                interrupted.append(time.perf_counter())
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    # the interpreter's own handler raises KeyboardInterrupt, whatever an earlier test installed
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt = threading.Thread(target=ctrl_c_once_the_quick_trials_are_stored, daemon=True)
    try:
        interrupt.start()
        results = run(sweep, backend="pool", workers=2, store=store, progress=False)
        returned.set()
        pytest.fail(f"the sweep ran to its end through the Ctrl-C: {results.records}")
    except KeyboardInterrupt:
        assert interrupted and time.perf_counter() - interrupted[0] < 10  # not the 40 s left
    finally:
        interrupt.join()
        signal.signal(signal.SIGINT, previous)
    kept = [r["config"]["sleep"] for r in ResultsStore(store).records.values()]
    assert sorted(kept) == [0.0, 0.01]  # finished before Ctrl-C, so written at once


def test_tables_sort_numbers_as_numbers() -> None:
    sweep = Sweep(trial=score_trial, axes={"x": [10, 2, 1.5], "seed": [10, 2]})
    results = run(sweep, backend="inprocess", store=":memory:", progress=False)
    assert [(r["seed"], r["x"]) for r in results.to_rows()] == [  # by key: seed, then x
        (2, 1.5), (2, 2), (2, 10), (10, 1.5), (10, 2), (10, 10)
    ]  # fmt: skip
    assert [row["x"] for row in results.summary("x", "score")] == [1.5, 2, 10]


@pytest.mark.parametrize("backend", ["inprocess", "pool"])
def test_errors_raise_stops_at_the_first_failure_and_keeps_the_rest(
    tmp_path: Path, backend: str
) -> None:
    sweep = Sweep(trial=counted_trial, axes={"x": [1, -1, 2]}, fixed={"y": 1, "dir": str(tmp_path)})
    store = tmp_path / "results.jsonl"
    with pytest.raises(TrialError, match=r"failed with ValueError: x=-1 is cursed") as caught:
        run(sweep, backend=backend, workers=1, store=store, errors="raise", progress=False)
    assert caught.value.record["config"]["x"] == -1
    assert "counted_trial" in str(caught.value) and "Traceback" in str(caught.value)
    assert ResultsStore(store).records[caught.value.record["key"]]["status"] == "failed"
    # the failure is in the store: errors="raise" stops on it again without running anything
    before = calls(tmp_path)
    with pytest.raises(TrialError, match="x=-1 is cursed"):
        run(sweep, backend=backend, workers=1, store=store, errors="raise", progress=False)
    assert calls(tmp_path) == before
    recorded = run(sweep, backend=backend, workers=1, store=store, progress=False)
    assert sorted(r["config"]["x"] for r in recorded.ok) == [1, 2]  # the default goes on
    with pytest.raises(ValueError, match="errors='ignore': use 'record' or 'raise'"):
        run(sweep, store=store, errors="ignore")
