"""Typed results and their files: ``results.json`` (schema-versioned) and ``results.csv`` beside it.

A :class:`Row` is one metric of one variant: its value (the median over repeats), unit, the raw
samples (one per repeat process), their statistics (median, IQR, q1, q3, n), and a status
(``ok`` / ``error`` / ``not-measured``) with the error text. Files are written atomically.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError

SCHEMA_VERSION = 1
STATUSES = ("ok", "error", "not-measured")


class ResultsError(UsageError):
    """A results file that cannot be used (corrupt, wrong schema, missing fields)."""


@dataclass
class Stats:
    """Order statistics of repeat samples: median, q1, q3 (linear interpolation), iqr = q3 - q1, n."""

    median: float
    q1: float
    q3: float
    iqr: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Stats | None:
        """Statistics of the finite samples (None and NaN/inf dropped); None when none is left."""
        xs = [float(x) for x in samples if x is not None and math.isfinite(float(x))]
        if not xs:
            return None
        q1, med, q3 = quantile(xs, (0.25, 0.5, 0.75))
        return cls(med, q1, q3, q3 - q1, len(xs))


def quantile(xs, q):
    """The suite's one quantile function: numpy's linear interpolation between order statistics
    (numpy's default, "type 7"). ``q`` a fraction in [0, 1] -> float, or a sequence -> list of floats."""
    import numpy as np

    arr = np.asarray(list(xs), dtype=float)
    if arr.size == 0:
        raise ValueError("quantile of no samples")
    out = np.quantile(arr, q)
    return float(out) if np.ndim(out) == 0 else [float(v) for v in out]


@dataclass
class Row:
    """One metric of one variant. A measurement process emits rows through :func:`measured` (variant
    and samples still empty: the runner's :func:`aggregate` fills them from every repeat)."""

    variant: str
    metric: str
    value: float | None
    unit: str
    samples: list = field(default_factory=list)
    stats: Stats | None = None
    status: str = "ok"
    error: str | None = None
    measurement: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ResultsError(f"row {self.variant}/{self.metric}: status {self.status!r} not in {STATUSES}")
        if isinstance(self.stats, dict):
            self.stats = Stats(**self.stats)

    @property
    def key(self) -> tuple[str, str]:
        return self.variant, self.metric


def measured(metric: str, value: float | None, unit: str, extra: dict | None = None, *, status: str = "ok",
             error: str | None = None) -> Row:
    """A row as one measurement process reports it (one sample; ``extra["calls"]``, when present, the
    per-call seconds). ``value`` None needs a status other than "ok" and the reason in ``error``."""
    if value is None and status == "ok":
        raise ResultsError(f"row {metric}: a missing value needs status 'error' or 'not-measured' and a reason")
    return Row("", metric, value, unit, status=status, error=error, extra=dict(extra or {}))


@dataclass
class Results:
    rows: list = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    variants: dict = field(default_factory=dict)  # name -> variant spec as data
    profile: dict = field(default_factory=dict)
    tasks: dict = field(default_factory=dict)  # task id -> raw outcome (for --resume and audit)
    command: str = ""
    schema_version: int = SCHEMA_VERSION

    # -- queries ---------------------------------------------------------------------------
    def get(self, variant: str, metric: str) -> Row | None:
        for r in self.rows:
            if r.variant == variant and r.metric == metric:
                return r
        return None

    def value(self, variant: str, metric: str) -> float | None:
        r = self.get(variant, metric)
        return r.value if r is not None and r.status == "ok" else None

    def precision(self, variant: str | None, metric: str) -> str | None:
        """What ``variant``'s ``metric`` ran at ("fp32", "bf16", ...), as its row records it; None where not."""
        r = self.get(variant, metric) if variant else None
        return (r.extra or {}).get("precision") if r is not None else None

    def to_frame(self):
        import pandas as pd

        recs = []
        for r in self.rows:
            s = r.stats
            recs.append({"variant": r.variant, "metric": r.metric, "value": r.value, "unit": r.unit,
                         "median": s.median if s else None, "q1": s.q1 if s else None, "q3": s.q3 if s else None,
                         "iqr": s.iqr if s else None, "n": s.n if s else 0, "status": r.status,
                         "error": r.error or "", "measurement": r.measurement,
                         "samples": json.dumps(r.samples)})
        return pd.DataFrame.from_records(recs, columns=["variant", "metric", "value", "unit", "median", "q1", "q3",
                                                        "iqr", "n", "status", "error", "measurement", "samples"])

    # -- IO --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write ``results.json`` and ``results.csv`` (same stem) atomically; returns the JSON path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(self.to_dict(), indent=1, sort_keys=False, default=_json_default))
        atomic_write(path.with_suffix(".csv"), self.to_frame().to_csv(index=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Results:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ResultsError(f"{path}: no such results file") from None
        except (IsADirectoryError, NotADirectoryError, PermissionError) as err:
            # a folder, a path through a file, an unreadable file: the same one line as a missing one, not a traceback
            raise ResultsError(f"{path}: cannot read the results file ({err.strerror or err})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ResultsError(f"{path}: not valid JSON ({err}); the file is corrupt or truncated") from err
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = "results") -> Results:
        if not isinstance(data, dict):
            raise ResultsError(f"{where}: expected a JSON object at the top level")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ResultsError(f"{where}: schema_version {version!r}, this ovd-bench reads {SCHEMA_VERSION}; "
                               "re-run `ovd-bench run` to regenerate it")
        try:
            rows = [Row(**r) for r in data["rows"]]
            return cls(rows=rows, environment=dict(data.get("environment", {})),
                       variants=dict(data.get("variants", {})), profile=dict(data.get("profile", {})),
                       tasks=dict(data.get("tasks", {})), command=str(data.get("command", "")),
                       schema_version=version)
        except (KeyError, TypeError) as err:
            raise ResultsError(f"{where}: malformed rows ({err})") from err


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)  # rows and results of measurements
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


@dataclass
class FailedRepeats:
    """A measurement (variant, measurement) of which ``failed`` of ``planned`` repeat processes failed while the
    others reported ``rows``: its statistics rest on the survivors. ``last_error`` is the last failure's text."""

    variant: str
    measurement: str
    failed: int
    planned: int
    last_error: str
    rows: list


def failed_repeats(rows: list[Row]) -> list[FailedRepeats]:
    """The measurements among successful ``rows`` with failed repeat processes (``extra["failed_repeats"]``, set by
    :func:`aggregate`), sorted by (variant, measurement): one place that counts them, for the report's banner and
    the gate. planned = failed + the most processes any of the measurement's rows came from (``per_repeat``, one
    entry per process that reported the row; the samples for a file written without it)."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        if row.status == "ok" and (row.extra or {}).get("failed_repeats"):
            groups.setdefault((row.variant, row.measurement or row.metric), []).append(row)
    out = []
    for (variant, measurement), group in sorted(groups.items()):
        failed = group[0].extra["failed_repeats"]
        survivors = max(len(r.extra.get("per_repeat") or r.samples) for r in group)
        out.append(FailedRepeats(variant, measurement, len(failed), len(failed) + survivors,
                                 str(failed[-1] or ""), group))
    return out


def aggregate(variant: str, measurement: str, outcomes: list[dict]) -> list[Row]:
    """Merge task outcomes (one per repeat process) of one (variant, measurement) into rows.

    Each outcome (the worker's JSON): {"status": "ok"|"error", "rows": [a :func:`measured` Row as a dict:
    "metric", "value", "unit", "extra", "status", "error"], "error": str}. The value is the median of the
    repeat samples."""
    rows: dict[str, Row] = {}
    errors = [o.get("error") for o in outcomes if o.get("status") != "ok"]
    for o in outcomes:
        if o.get("status") != "ok":
            continue
        for r in o.get("rows", []):
            row = rows.get(r["metric"])
            if row is None:
                row = rows[r["metric"]] = Row(variant, r["metric"], None, r.get("unit", ""), measurement=measurement,
                                              status=r.get("status", "ok"), error=r.get("error"))
                row.extra = {k: v for k, v in (r.get("extra") or {}).items()}
                row.extra["per_repeat"] = []
            if r.get("value") is not None:
                row.samples.append(float(r["value"]))
            # per process: its timed calls, and why an arm got only one (bench.measure.arms.is_slow_arm)
            row.extra["per_repeat"].append({k: v for k, v in (r.get("extra") or {}).items()
                                            if k in ("calls", "timed_once")})
    for row in rows.values():
        row.extra.pop("calls", None)
        row.extra.pop("timed_once", None)  # a per-process fact: per_repeat holds each process's
        row.stats = Stats.of(row.samples)
        if row.stats is not None:
            row.value = row.stats.median
            if row.status == "not-measured":
                row.status = "ok"
        if errors:
            row.extra["failed_repeats"] = errors
    if not rows and errors:
        return [Row(variant, f"{measurement}/*", None, "", status="error", error=errors[-1], measurement=measurement)]
    return list(rows.values())
