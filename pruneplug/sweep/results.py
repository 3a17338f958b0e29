"""A sweep's results as records and as a plain table (a list of dicts; pandas is not needed).

Records are sorted by their config (:func:`order`: numbers as numbers, so seed 2 comes before
seed 10), so the same sweep gives the same table on every backend, whatever order the trials
finished in. ``pandas.DataFrame(results.to_rows())`` turns the table into a data frame for
those who have pandas.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spec import canonical_json
from .store import Record, ResultsStore


def order(value: Any) -> tuple[Any, ...]:
    """A sort key for config values and configs: numbers by value (not by their text, which
    would put 10 before 2), then strings, then anything else by its canonical JSON; a dict by
    its sorted items, a list item by item."""
    if isinstance(value, dict):
        return (3, tuple((key, order(value[key])) for key in sorted(value)))
    if isinstance(value, (list, tuple)):
        return (2, tuple(order(item) for item in value))
    if isinstance(value, (int, float)):  # bools too (False < True)
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (4, canonical_json(value))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as aligned text columns (``columns``: which and in what order; default all)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [columns, *cells]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


@dataclass(frozen=True)
class Spread:
    """Mean of a sample, its sample standard deviation and the half-width of its 95 % interval.

    ``std`` and ``ci95`` are ``None`` for a sample of one (no spread can be estimated).
    """

    mean: float
    std: float | None
    ci95: float | None
    n: int


def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided Student's t quantile ``t_{(1 + level) / 2, df}`` (4.30 for df = 2)."""
    from scipy.stats import t  # scipy comes with scikit-learn; imported when first needed

    return float(t.ppf((1 + level) / 2, df))


def spread(values: Sequence[float]) -> Spread:
    """Mean, sample std ``s`` (divisor n - 1) and 95 % half-width ``t_{0.975, n-1} s / sqrt(n)``.

    The t quantile, not 1.96: with three seeds the normal interval would be less than half as
    wide as it should be (Student 1908).
    """
    if not values:
        raise ValueError("spread() needs at least one value")
    n = len(values)
    mean = statistics.fmean(values)
    if n == 1:
        return Spread(mean, None, None, 1)
    std = statistics.stdev(values)
    return Spread(mean, std, t_quantile(n - 1) * std / math.sqrt(n), n)


@dataclass
class Results:
    """The records of one sweep (or of a whole results file), sorted by config.

    Attributes:
        records: dicts as stored (see :mod:`pruneplug.sweep.store`).
        ran, cached: how many trials this run executed, and how many it found already done.
    """

    records: list[Record]
    ran: int = 0
    cached: int = 0

    def __post_init__(self) -> None:
        self.records = sorted(self.records, key=lambda r: order(r["config"]))

    @classmethod
    def load(cls, path: str | Path) -> Results:
        """Every record of a results file (e.g. to summarise a sweep that ran elsewhere)."""
        return cls(list(ResultsStore(path).records.values()))

    @property
    def ok(self) -> list[Record]:
        """Records of trials that returned metrics."""
        return [r for r in self.records if r["status"] == "ok"]

    @property
    def failed(self) -> list[Record]:
        """Records of trials that raised, or whose worker kept dying."""
        return [r for r in self.records if r["status"] == "failed"]

    def to_rows(self, *, timing: bool = True) -> list[dict[str, Any]]:
        """One flat dict per trial: config keys, metrics, ``status``, ``error``, ``time_s``.

        Every row has the same keys (``None`` where a trial lacks a metric). ``timing=False``
        leaves out ``time_s`` and any metric ending in ``_s`` or ``_ms`` (they differ run to run).
        """
        config_keys = sorted({k for r in self.records for k in r["config"]})
        metric_keys = sorted({k for r in self.records for k in (r.get("metrics") or {})})
        if not timing:
            metric_keys = [k for k in metric_keys if not k.endswith(("_s", "_ms"))]
        rows = []
        for r in self.records:
            metrics, error = r.get("metrics") or {}, r.get("error")
            row = {k: r["config"].get(k) for k in config_keys}
            row.update({k: metrics.get(k) for k in metric_keys})
            row["status"] = r["status"]
            row["error"] = f"{error['type']}: {error['message']}" if error else None
            if timing:
                row["time_s"] = r.get("time_s")
            rows.append(row)
        return rows

    def summary(
        self,
        group_by: str | Iterable[str],
        metric: str = "accuracy",
        *,
        over: str | Iterable[str] = "seed",
    ) -> list[dict[str, Any]]:
        """Mean, sample standard deviation, 95 % half-width and count of ``metric`` per group.

        Over the successful trials. ``group_by`` is one config key or several; each row is
        ``{key: value, ..., "metric": metric, "mean": ..., "std": ..., "ci95": ..., "n": ...}``
        (:func:`spread`; ``std`` and ``ci95`` are ``None`` for a group of one). ``over`` names
        the keys a group pools (the seeds, by default).

        Raises ``ValueError`` when a key that is in neither varies within a group: a mean over
        two amounts or two scorers is rarely meant, so group by it too, or name it in ``over``.
        Raises ``KeyError`` naming the keys there are when a key or the metric is unknown.
        """
        return [
            {
                **dict(zip(self._keys(group_by), values, strict=True)),
                "metric": metric,
                "mean": s.mean,
                "std": s.std,
                "ci95": s.ci95,
                "n": s.n,
            }
            for values, s in self._groups(group_by, metric, over)
        ]

    def spreads(
        self,
        group_by: str | Iterable[str],
        metric: str = "accuracy",
        *,
        over: str | Iterable[str] = "seed",
    ) -> dict[Any, Spread]:
        """The :meth:`summary` as a dict, for claims and plots: group -> :class:`Spread`.

        A group is the value of its key when ``group_by`` is one key, else the tuple of values
        (``results.spreads(["scorer", "amount"])[("magnitude", 0.9)].ci95``).
        """
        single = isinstance(group_by, str)
        return {
            (values[0] if single else tuple(values)): s
            for values, s in self._groups(group_by, metric, over)
        }

    @staticmethod
    def _keys(names: str | Iterable[str]) -> list[str]:
        return [names] if isinstance(names, str) else list(names)

    def _groups(
        self, group_by: str | Iterable[str], metric: str, over: str | Iterable[str]
    ) -> list[tuple[list[Any], Spread]]:
        keys, pooled = self._keys(group_by), set(self._keys(over))
        config_keys = {k for r in self.records for k in r["config"]}
        metric_keys = {k for r in self.ok for k in r["metrics"]}
        for key in keys:
            if key not in config_keys:
                raise KeyError(
                    f"no config key {key!r}; the keys are {', '.join(sorted(config_keys))}"
                )
        if self.ok and metric not in metric_keys:
            raise KeyError(
                f"no metric {metric!r}; the metrics are {', '.join(sorted(metric_keys))}"
            )
        groups: dict[str, tuple[list[Any], list[Record]]] = {}
        for r in self.ok:
            if r["metrics"].get(metric) is None:
                continue
            values = [r["config"].get(k) for k in keys]
            groups.setdefault(canonical_json(values), (values, []))[1].append(r)
        mixed = sorted(
            {
                key
                for key in config_keys - set(keys) - pooled
                for _, members in groups.values()
                if len({canonical_json(m["config"].get(key)) for m in members}) > 1
            }
        )
        if mixed:
            names = ", ".join(mixed)
            raise ValueError(
                f"grouped by {keys}, each group would pool trials that differ in {names}, not "
                f"only in {sorted(pooled)}: add {names} to group_by, or to over= if a mean over "
                "them is what you want"
            )
        return [
            (values, spread([r["metrics"][metric] for r in members]))
            for values, members in sorted(groups.values(), key=lambda group: order(group[0]))
        ]

    def __str__(self) -> str:
        return format_table(self.to_rows())
