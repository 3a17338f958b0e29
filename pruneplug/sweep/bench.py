"""``bench(quick)``: what each backend adds to a sweep, in start-up and per trial.

The trial is :func:`toy_trial`, a pure-Python loop of a fixed length (no PyTorch threads to
share, so the cores are the only limit), run as the same sweep in-process, on the local pool
and, when Ray is installed, on a local Ray instance. Each backend runs the sweep twice:

* **cold**: the first run in this process, as a user's first sweep: the pool starts its
  forkserver (which imports torch) and its workers; Ray starts a local instance (``ray.init``,
  timed on its own) and its worker processes;
* **warm**: the same sweep again (a fresh in-memory store, so every trial runs): the pool forks
  new workers from the running forkserver, Ray reuses its instance and workers - the rate a
  long sweep, or a cluster that is already up, approaches.

Start-up is cold minus warm wall time (plus ``ray.init``); the **overhead per trial** is
``warm wall * workers / n - t``, with ``t`` the in-process time of one trial: what process
hand-offs, pickling and the store cost each trial. Speed-ups are against the in-process run of
the same sweep, in the same process.
"""

from __future__ import annotations

import importlib.util
import os
import time
from typing import Any

from .results import format_table
from .runner import default_workers, run
from .spec import Config, Sweep


def toy_trial(config: Config) -> dict[str, Any]:
    """A trial computed from its config alone: ``score = x * y`` after ``work`` loop turns.

    ``work`` (default 20,000) sets how long it runs; the result is the same on every backend.
    """
    total = 0
    for i in range(int(config.get("work", 20_000))):
        total = (total + i * i) % 1_000_003
    return {"score": config["x"] * config["y"], "checksum": total}


def _wall(sweep: Sweep, backend: str, workers: int) -> float:
    start = time.perf_counter()
    results = run(sweep, backend=backend, workers=workers, store=":memory:", progress=False)
    if results.failed:
        raise RuntimeError(f"{backend}: {results.failed[0]['error']}")
    return time.perf_counter() - start


def _cold_and_warm(sweep: Sweep, backend: str, workers: int) -> tuple[float, float, float]:
    """(start-up outside the runs, cold wall, warm wall); Ray is started here for both runs."""
    if backend != "ray":
        return 0.0, _wall(sweep, backend, workers), _wall(sweep, backend, workers)
    import ray

    start = time.perf_counter()
    ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False)
    try:
        init = time.perf_counter() - start
        return init, _wall(sweep, backend, workers), _wall(sweep, backend, workers)
    finally:
        ray.shutdown()


def bench(quick: bool = False) -> dict[str, dict[str, float]]:
    """Print and return, per backend: start-up, cold and warm wall time, rates, overhead.

    ``quick``: 8 short trials (a smoke test of the machinery, not a measurement); otherwise 96
    trials of about 0.15 s each. Ray is measured when it is installed (``pruneplug[ray]``).
    """
    n, work = (8, 20_000) if quick else (96, 2_000_000)
    workers = default_workers()
    sweep = Sweep(trial=toy_trial, axes={"x": list(range(n)), "y": [1]}, fixed={"work": work})
    backends = ["inprocess", "pool"]
    if importlib.util.find_spec("ray") is not None:
        backends.append("ray")
    rows: dict[str, dict[str, float]] = {}
    for backend in backends:
        used = 1 if backend == "inprocess" else workers
        init, cold, warm = _cold_and_warm(sweep, backend, used)
        rows[backend] = {"workers": used, "start_s": init + max(cold - warm, 0.0)}
        rows[backend].update(cold_s=init + cold, warm_s=warm)
    trial_s = rows["inprocess"]["warm_s"] / n
    for row in rows.values():
        row["per_min"] = 60 * n / row["warm_s"]
        row["speedup"] = rows["inprocess"]["warm_s"] / row["warm_s"]
        row["cold_speedup"] = rows["inprocess"]["cold_s"] / row["cold_s"]
        row["overhead_ms"] = 1000 * (row["warm_s"] * row["workers"] / n - trial_s)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"sweep of {n} toy trials of {1000 * trial_s:.1f} ms each (in-process), "
        f"{workers} core(s), load average {load:.2f} at the end"
    )
    print(
        format_table(
            [
                {
                    "backend": name,
                    "workers": int(row["workers"]),
                    "start-up s": round(row["start_s"], 2),
                    "cold wall s": round(row["cold_s"], 2),
                    "cold x in-process": round(row["cold_speedup"], 2),
                    "warm wall s": round(row["warm_s"], 2),
                    "warm trials/min": round(row["per_min"]),
                    "warm x in-process": round(row["speedup"], 2),
                    "overhead ms/trial": round(row["overhead_ms"], 1),
                }
                for name, row in rows.items()
            ]
        )
    )
    if "ray" not in rows:
        print('ray: not installed, not measured (`pip install "pruneplug[ray]"`)')
    return rows
