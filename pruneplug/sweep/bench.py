"""``bench(quick)``: trials per second of the sweep machinery, in-process against the pool.

The trial is :func:`toy_trial`, a few milliseconds of arithmetic, so the figures are the
per-trial overhead of each backend (pickling, process start-up, the fsync-ed store) - the
cost a real sweep pays on top of its trials. The pool's start-up (one forkserver importing
torch, then its workers) is counted, as a user waits for it too.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

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


def bench(quick: bool = False) -> dict[str, float]:
    """Print and return trials/s of the ``inprocess`` and ``pool`` backends on one toy sweep."""
    n = 16 if quick else 200
    sweep = Sweep(trial=toy_trial, axes={"x": list(range(n)), "y": [1]}, fixed={"work": 20_000})
    workers = default_workers()
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for backend in ("inprocess", "pool"):
            start = time.perf_counter()
            store = Path(folder) / f"{backend}.jsonl"
            results = run(sweep, backend=backend, store=store, workers=workers, progress=False)
            assert len(results.ok) == n, results.failed
            rates[backend] = n / (time.perf_counter() - start)
    print(f"sweep of {n} toy trials (~ms each), {workers} pool worker(s):")
    for backend, rate in rates.items():
        print(f"  {backend:<10} {rate:8.1f} trials/s")
    return rates
