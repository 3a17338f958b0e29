"""Running a sweep: in this process, on a local process pool (the default), or on Ray.

Every backend runs the same function on each config, :func:`execute`, which turns whatever the
trial does into a record (an exception becomes a ``"failed"`` record with its type and message;
the sweep goes on), and the driver appends each record to the store the moment it arrives.
So a rerun skips what is done, and an interrupted sweep (Ctrl-C, a crash, a killed worker)
resumes with nothing lost and nothing done twice.

* ``"inprocess"`` - a loop here: for tests, notebooks and debugging (with ``errors="raise"``
  the first failure stops the sweep and shows its traceback).
* ``"pool"`` - :class:`concurrent.futures.ProcessPoolExecutor` with the ``forkserver`` start
  method where there is one (else ``spawn``; never ``fork``, which is unsafe once torch has
  started threads), ``workers`` processes (default: the cores this process may use), each with
  one PyTorch thread. At most ``workers`` trials are in flight, so when a worker dies (the OS
  killed it for memory, a segfault) the trials then running are known: each is retried in a
  fresh pool, up to ``max_retries`` times, then recorded as failed (``WorkerCrashed``).
* ``"ray"`` - Ray tasks (``pip install "pruneplug[ray]"``), one CPU each, on the cluster at
  ``RAY_ADDRESS`` or on a local Ray started (and stopped) for the sweep; at most ``workers``
  in flight (default: the cluster's CPUs); Ray retries tasks whose worker died ``max_retries``
  times, and the tasks in flight when the sweep stops early are cancelled.
"""

from __future__ import annotations

import datetime
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .results import Results
from .spec import Config, Sweep, Trial, config_hash, resolve_trial
from .store import Record, ResultsStore

BACKENDS = ("inprocess", "pool", "ray")
#: modules the forkserver imports once, so that each worker starts without importing torch again
PRELOAD = ["pruneplug.sweep.runner", "pruneplug.sweep.standard"]


@dataclass(frozen=True)
class Job:
    """One trial to run: its key, the trial (a callable or ``module:function``) and config."""

    key: str
    trial: Trial | str
    name: str
    config: Config


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _record(
    job: Job, status: str, metrics: dict | None, error: dict | None, time_s: float
) -> Record:
    return {
        "key": job.key,
        "trial": job.name,
        "config": job.config,
        "status": status,
        "metrics": metrics,
        "error": error,
        "time_s": time_s,
        "finished_at": _now(),
    }


def _error(exc: BaseException, trace: str | None = None) -> dict[str, str]:
    message = str(exc)
    if isinstance(exc, SystemExit):
        message = f"the trial called sys.exit({exc.code!r})"
    return {"type": type(exc).__name__, "message": message, "traceback": trace or ""}


def execute(job: Job) -> Record:
    """Run one trial and return its record; an exception is recorded, not raised.

    A trial must return a mapping of metric names to JSON numbers (or strings / booleans);
    anything else is recorded as a ``TypeError`` saying so; a ``SystemExit`` (``sys.exit``,
    argparse) is recorded as a failure of the trial, not of the sweep. ``KeyboardInterrupt`` is
    not caught: an interrupted trial is not finished, and runs again next time.
    """
    start = time.perf_counter()
    try:
        trial = resolve_trial(job.trial)
        metrics = trial(dict(job.config))
        if not isinstance(metrics, Mapping) or not all(isinstance(k, str) for k in metrics):
            raise TypeError(
                f"trial {job.name} returned {type(metrics).__name__}; a trial returns a dict "
                "of metric name -> number"
            )
        bad = {k: v for k, v in metrics.items() if not isinstance(v, (int, float, str, bool))}
        if bad:
            raise TypeError(
                f"trial {job.name} returned non-JSON metric values {bad!r}; convert them, "
                "e.g. float(tensor)"
            )
    except (Exception, SystemExit) as exc:  # sys.exit / argparse in a trial ends the trial only
        return _record(job, "failed", None, _error(exc, traceback.format_exc()), _elapsed(start))
    return _record(job, "ok", dict(metrics), None, _elapsed(start))


def _elapsed(start: float) -> float:
    return round(time.perf_counter() - start, 6)


def init_worker(started: Any = None) -> None:
    """Worker initializer: one PyTorch (and OpenMP/MKL) thread per worker process.

    ``started`` (a shared counter) counts the workers that got this far, past importing the
    main module: a pool that breaks with none started failed to start, not in a trial.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)
    if started is not None:
        with started.get_lock():
            started.value += 1


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


class TrialError(RuntimeError):
    """A trial raised, and the sweep ran with ``errors="raise"``: the trial's record (in
    ``.record``) and every trial finished before it are in the store."""

    def __init__(self, record: Record) -> None:
        self.record = record
        error = record["error"] or {}
        super().__init__(
            f"trial {record['trial']} failed with {error.get('type')}: {error.get('message')}\n"
            f"  config: {record['config']}\n"
            "The sweep stopped here (errors='raise'); finished trials are in the store, and "
            "retry_failed=True runs this one again. To debug it, call the trial on this config "
            f"in this process. Its traceback:\n{error.get('traceback', '')}"
        )


class PoolStartError(RuntimeError):
    """The pool's worker processes died while starting, before running any trial."""

    def __init__(self) -> None:
        super().__init__(
            "the process pool's workers died while starting, before running any trial (their "
            "tracebacks are above). Most often a script calls run() at its top level: each "
            "worker imports the main script again, so put the call under "
            '`if __name__ == "__main__":`. Or use backend="inprocess" to see any other '
            "problem in this process"
        )


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


def _crashed(job: Job, crashes: int) -> Record:
    error = {
        "type": "WorkerCrashed",
        "message": (
            f"the worker process running this trial died {crashes} time(s) (killed by the OS "
            "for memory, a segfault, a signal); it counts against every trial running at that "
            "moment. Rerun with retry_failed=True (--retry-failed) to try again"
        ),
        "traceback": "",
    }
    return _record(job, "failed", None, error, 0.0)


def run_inprocess(jobs: list[Job], workers: int | None, max_retries: int) -> Iterator[Record]:
    """Run the jobs one after another in this process."""
    for job in jobs:
        yield execute(job)


def run_pool(jobs: list[Job], workers: int | None, max_retries: int) -> Iterator[Record]:
    """Run the jobs on a process pool, at most ``workers`` in flight (default: the usable
    cores); retry after a crash."""
    workers = workers or default_workers()
    if sys.modules.get("__mp_main__", sys.modules["__main__"]) is not sys.modules["__main__"]:
        # a new worker is importing the main script (as __mp_main__), and the script runs the
        # sweep at its top level: stop here, before starting processes from a worker
        raise PoolStartError()
    todo = list(jobs)
    crashes: dict[str, int] = {}
    context = _context()
    started = context.Value("i", 0)
    while todo:
        retry: list[Job] = []
        size = min(workers, len(todo))
        executor = ProcessPoolExecutor(
            size, mp_context=context, initializer=init_worker, initargs=(started,)
        )
        queue = iter(todo)
        flying: dict[Future, Job] = {}
        try:
            for job in queue:
                flying[executor.submit(execute, job)] = job
                if len(flying) >= size:
                    break
            while flying:
                done, _ = wait(flying, return_when=FIRST_COMPLETED)
                for future in done:
                    job = flying.pop(future)
                    try:
                        record = future.result()
                    except BrokenProcessPool:
                        if started.value == 0:
                            raise PoolStartError() from None
                        crashes[job.key] = crashes.get(job.key, 0) + 1
                        if crashes[job.key] > max_retries:
                            yield _crashed(job, crashes[job.key])
                        else:
                            retry.append(job)
                        continue
                    yield record
                    next_job = next(queue, None)
                    if next_job is None:
                        continue
                    try:
                        flying[executor.submit(execute, next_job)] = next_job
                    except BrokenProcessPool:  # broke after this job finished: a fresh pool
                        retry.append(next_job)  # runs it (it never started, so no crash)
            retry += list(queue)  # not started when the pool broke
        except BaseException:
            # Ctrl-C (or the caller stopped early): return at once. Queued trials are cancelled;
            # running ones finish in the background unrecorded, and a rerun does them again.
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        executor.shutdown(wait=True)
        todo = retry


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError(
            'the Ray backend needs Ray: `pip install "pruneplug[ray]"` (or use backend="pool")'
        ) from exc
    return ray


def _ray_execute(job: Job) -> Record:
    init_worker()
    return execute(job)


def run_ray(jobs: list[Job], workers: int | None, max_retries: int) -> Iterator[Record]:
    """Run the jobs as Ray tasks (one CPU each), at most ``workers`` in flight (default: the
    CPUs of the whole cluster, not of this machine).

    When the sweep stops early (Ctrl-C, an error in the driver), the tasks still in flight are
    cancelled, so a shared cluster does not keep running trials whose results nobody collects.
    """
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:  # connects to RAY_ADDRESS when set, else starts a local Ray
        try:
            ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False)
        except BaseException:
            ray.shutdown()  # stop the processes a failed start left behind
            raise
    task = ray.remote(num_cpus=1, max_retries=max_retries)(_ray_execute)
    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    flying: dict[Any, Job] = {}
    try:
        queue = iter(jobs)
        for job in queue:
            flying[task.remote(job)] = job
            if len(flying) >= workers:
                break
        while flying:
            (ref,), _ = ray.wait(list(flying), num_returns=1)
            job = flying.pop(ref)
            try:
                record = ray.get(ref)
            except ray.exceptions.WorkerCrashedError:
                record = _crashed(job, max_retries + 1)
            except ray.exceptions.RayError as exc:  # the task could not run at all
                record = _record(job, "failed", None, _error(exc), 0.0)
            yield record
            next_job = next(queue, None)
            if next_job is not None:
                flying[task.remote(next_job)] = next_job
    finally:
        for ref in flying:  # stopped early: nobody will collect these
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


RUNNERS: dict[str, Callable[[list[Job], int | None, int], Iterator[Record]]] = {
    "inprocess": run_inprocess,
    "pool": run_pool,
    "ray": run_ray,
}


def run(
    sweep: Sweep | str | Path,
    *,
    backend: str = "pool",
    workers: int | None = None,
    store: str | Path | None = None,
    retry_failed: bool = False,
    max_retries: int = 2,
    errors: str = "record",
    progress: bool = True,
) -> Results:
    """Validate and run a sweep (a :class:`Sweep` or a TOML path); return its records.

    Args:
        backend: ``"inprocess"``, ``"pool"`` (default) or ``"ray"``.
        workers: processes (pool) or tasks in flight (Ray); default: the usable cores of this
            machine (pool), the CPUs of the cluster (Ray).
        store: results file; default: the sweep's ``store``, else ``sweep-results.jsonl``
            (relative to the current folder).
        retry_failed: run trials recorded as failed again (otherwise they count as done).
        max_retries: how often a trial whose worker died is retried before it is recorded as
            failed.
        errors: ``"record"`` (default): a trial that raises is recorded as failed and the sweep
            goes on, as a long sweep should; ``"raise"``: the first failed trial (run now, or
            found in the store) stops the sweep with a :class:`TrialError` carrying its
            record and traceback - what a notebook or a test wants.
        progress: show a progress bar of trials done, failed and cached.

    Raises :class:`~pruneplug.sweep.spec.SweepConfigError` listing every problem before any
    trial runs. ``KeyboardInterrupt`` stops the sweep; the finished trials are in the store.
    The pool starts processes that import the main script (``forkserver``/``spawn``), so a
    script calls ``run`` under ``if __name__ == "__main__":``; notebooks need nothing.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: use one of {', '.join(BACKENDS)}")
    if errors not in ("record", "raise"):
        raise ValueError(f"errors={errors!r}: use 'record' or 'raise'")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries={max_retries!r}: give a whole number >= 0")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise ValueError(f"workers={workers!r}: give a whole number >= 1")
    if isinstance(sweep, (str, Path)):
        sweep = Sweep.from_toml(sweep)
    trial, name, configs = sweep.plan(backend)
    if backend == "ray":
        _import_ray()
    with ResultsStore.writing(store or sweep.store or "sweep-results.jsonl") as results:
        sent = sweep.trial if isinstance(sweep.trial, str) else trial  # names travel by import
        jobs, cached = [], []
        for config in configs:
            key = config_hash(name, config)
            record = results.get(key)
            if record is not None and (record["status"] == "ok" or not retry_failed):
                cached.append(record)
            else:
                jobs.append(Job(key, sent, name, config))
        records = list(cached)
        failed = sum(r["status"] == "failed" for r in cached)
        if errors == "raise" and failed:
            raise TrialError(next(r for r in cached if r["status"] == "failed"))
        bar = tqdm(total=len(configs), initial=len(cached), disable=not progress, unit="trial")
        bar.set_postfix(failed=failed, cached=len(cached))
        try:
            for record in RUNNERS[backend](jobs, workers, max_retries):
                results.append(record)
                records.append(record)
                failed += record["status"] == "failed"
                bar.set_postfix(failed=failed, cached=len(cached))
                bar.update()
                if errors == "raise" and record["status"] == "failed":
                    raise TrialError(record)
        finally:
            bar.close()
        return Results(records, ran=len(records) - len(cached), cached=len(cached))
