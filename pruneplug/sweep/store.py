"""The results store: one JSON Lines file, one record per finished trial, written at once.

**Why JSON Lines and not SQLite.** Only the driver process writes (workers hand their records
back), so the store needs little concurrency control - SQLite's main strength - and what matters
is that a finished trial survives any crash and that the file stays easy to own: every record is
appended as one line and ``fsync``-ed before the next trial's result is taken, so a crash can
at worst tear the *last* line. Readers (:meth:`Results.load <pruneplug.sweep.Results.load>`, a
notebook watching a sweep) skip an unfinished last line and never change the file: it may be a
write in progress. The driver (:meth:`ResultsStore.writing`) holds an advisory lock on
``<file>.lock`` for the whole run, so a second driver on the same file is refused instead of
redoing its trials, and it alone cuts a torn last line off, saving it aside (``<file>.torn``)
with a warning and keeping every complete record. The file is plain text: ``grep``, ``jq``,
``tail -f``, version control and ``cat a.jsonl b.jsonl`` (merging the results of two machines)
all work. Where the filesystem has no locks (some network filesystems; Windows) the driver
warns and runs unlocked.

Records are keyed by :func:`pruneplug.sweep.spec.config_hash`; a later record of the same key
replaces an earlier one (a failed trial retried with ``retry_failed=True``). A record is::

    {"key": "<sha256>", "trial": "module:function", "config": {...}, "status": "ok"|"failed",
     "metrics": {...}, "error": null | {"type": ..., "message": ..., "traceback": ...},
     "time_s": 1.23, "finished_at": "2025-01-01T12:00:00+00:00"}
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

Record = dict[str, Any]
RECORD_KEYS = ("key", "trial", "config", "status")


class StoreWarning(UserWarning):
    """Part of a results file could not be read; the rest was kept."""


class StoreBusyError(OSError):
    """Another sweep holds the results file's lock."""


#: the store name that keeps records in memory only (as SQLite's ``":memory:"``): for notebooks
#: and tests whose sweeps are small enough to rerun, and which must not leave files behind
MEMORY = ":memory:"


class ResultsStore:
    """Append-only JSON Lines file of trial records, keyed by config hash (latest wins).

    ``ResultsStore(":memory:")`` keeps the records in memory only: nothing is read or written,
    so nothing survives the process.
    """

    def __init__(self, path: str | Path, *, repair: bool = False) -> None:
        self.path: Path | None = None if str(path) == MEMORY else Path(path)
        self.records: dict[str, Record] = {}
        self.load(repair=repair)

    @classmethod
    @contextmanager
    def writing(cls, path: str | Path) -> Iterator[ResultsStore]:
        """The store of the one driver writing ``path``: locked for the block, torn tail cut."""
        if str(path) == MEMORY:
            yield cls(path)
            return
        lock_path = Path(str(path) + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as lock:
            if fcntl is not None:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise StoreBusyError(
                        f"another sweep is writing {path} (it holds {lock_path}): wait for it "
                        "to finish, or give this one another store"
                    ) from None
                except OSError as error:  # a filesystem without locks
                    warnings.warn(
                        f"cannot lock {lock_path} ({error}): running unlocked, so make sure "
                        f"no other sweep writes {path} meanwhile",
                        StoreWarning,
                        stacklevel=3,
                    )
            yield cls(path, repair=True)

    def load(self, *, repair: bool = False) -> dict[str, Record]:
        """Read the file: complete records by key.

        An unfinished last line is skipped; with ``repair`` (the writing driver only) it is
        cut off the file and saved aside.
        """
        self.records = {}
        if self.path is None or not self.path.exists():
            return self.records
        data = self.path.read_bytes()
        end = len(data)
        if data and not data.endswith(b"\n"):  # a write in progress, or one that never finished
            end = data.rfind(b"\n") + 1
        if repair and end < len(data):
            kept = data[:end].count(b"\n")
            torn = self.path.with_name(self.path.name + ".torn")
            with torn.open("ab") as file:
                file.write(data[end:] + b"\n")
            with self.path.open("r+b") as file:
                file.truncate(end)
                file.flush()
                os.fsync(file.fileno())
            warnings.warn(
                f"{self.path}: the last line was only partly written (a crash during a write); "
                f"cut it off and saved it to {torn}. The {kept} complete lines are kept; its "
                "trial will run again.",
                StoreWarning,
                stacklevel=2,
            )
        for number, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            problem = None
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                problem = f"not valid JSON ({exc})"
            else:
                if not isinstance(record, dict) or any(k not in record for k in RECORD_KEYS):
                    problem = f"not a trial record (needs the keys {', '.join(RECORD_KEYS)})"
            if problem:
                warnings.warn(
                    f"{self.path}, line {number}: {problem}; skipped (left in the file), its "
                    "trial will run again",
                    StoreWarning,
                    stacklevel=2,
                )
                continue
            self.records[record["key"]] = record
        return self.records

    def append(self, record: Record) -> None:
        """Write one record as one line and fsync it, before anything else happens."""
        if self.path is not None:
            line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                file.write(line)
                file.flush()
                os.fsync(file.fileno())
        self.records[record["key"]] = record

    def get(self, key: str) -> Record | None:
        """The latest record of ``key``, or ``None``."""
        return self.records.get(key)
