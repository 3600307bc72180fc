"""Per-rule figures: confusion matrix, precision, recall, alert volume per day.

Definitions (one labelled event = one decision of the rule):

- true positive (tp): the rule alerts and the label is fraud; false positive (fp):
  alerts, not fraud; false negative (fn): no alert, fraud; true negative (tn).
- precision = tp / (tp + fp), null when the rule never alerts;
  recall = tp / (tp + fn), null when no label is fraud.
- the period: from ``--from`` (default: the first labelled event's time) to ``--to``
  (default: just after the last labelled event); days = its length in days.
- alerts per day = alerts / days. The daily series counts per UTC calendar day of
  the labelled events' times, every day the period touches included (zeros too; the
  first and last days may be partial).

>>> import numpy as np
>>> m = rule_metrics("r", "x > 1", "", np.array([1, 1, 0, 0], bool),
...                  np.array([1, 0, 1, 0], bool), days=2.0)
>>> (m.tp, m.fp, m.fn, m.tn, m.precision, m.recall, m.alerts_per_day)
(1, 1, 1, 1, 0.5, 0.5, 1.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipelines.features.definitions import DAY_MS


@dataclass(frozen=True)
class RuleMetrics:
    """A rule's figures over the labelled events."""

    rule: str
    expr: str
    description: str
    labelled: int
    positives: int
    alerts: int
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float | None
    recall: float | None
    days: float
    alerts_per_day: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass(frozen=True)
class DailyPoint:
    """One rule on one UTC day."""

    rule: str
    day: str
    labelled: int
    positives: int
    alerts: int
    tp: int
    precision: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def rule_metrics(
    rule: str, expr: str, description: str, alerts: np.ndarray, labels: np.ndarray, days: float
) -> RuleMetrics:
    """Confusion matrix, precision, recall and alerts per day of one rule.

    Args:
        rule: rule name.
        expr: its expression.
        description: its description.
        alerts: bool per labelled event: did the rule fire.
        labels: bool per labelled event: is it fraud.
        days: length of the period in days (see :func:`period_days`).
    """
    alerts = np.asarray(alerts, dtype=bool)
    labels = np.asarray(labels, dtype=bool)
    tp = int(np.count_nonzero(alerts & labels))
    fp = int(np.count_nonzero(alerts & ~labels))
    fn = int(np.count_nonzero(~alerts & labels))
    tn = int(np.count_nonzero(~alerts & ~labels))
    return RuleMetrics(
        rule=rule,
        expr=expr,
        description=description,
        labelled=len(labels),
        positives=tp + fn,
        alerts=tp + fp,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        days=days,
        alerts_per_day=(tp + fp) / days if days > 0 else float(tp + fp),
    )


def period(times: np.ndarray, from_ms: int | None, to_ms: int | None) -> tuple[int, int]:
    """The period ``[start, end)`` in epoch ms that the labels cover (see module doc)."""
    start = from_ms if from_ms is not None else int(times.min())
    end = to_ms if to_ms is not None else int(times.max()) + 1
    return start, max(end, start + 1)


def period_days(times: np.ndarray, from_ms: int | None, to_ms: int | None) -> float:
    """Length of the period in days."""
    start, end = period(times, from_ms, to_ms)
    return (end - start) / DAY_MS


def day_name(day_index: int) -> str:
    """``YYYY-MM-DD`` of a day number since the epoch (UTC)."""
    return datetime.fromtimestamp(day_index * DAY_MS / 1000, tz=UTC).strftime("%Y-%m-%d")


def daily(
    rule: str,
    alerts: np.ndarray,
    labels: np.ndarray,
    times: np.ndarray,
    from_ms: int | None = None,
    to_ms: int | None = None,
) -> list[DailyPoint]:
    """Labels, alerts, true positives and precision per UTC day of the period."""
    start, end = period(times, from_ms, to_ms)
    first, last = start // DAY_MS, (end - 1) // DAY_MS
    n = last - first + 1
    day = times // DAY_MS - first
    alerts = np.asarray(alerts, dtype=bool)
    labels = np.asarray(labels, dtype=bool)
    count = np.bincount(day, minlength=n)
    pos = np.bincount(day, weights=labels, minlength=n).astype(np.int64)
    fired = np.bincount(day, weights=alerts, minlength=n).astype(np.int64)
    hits = np.bincount(day, weights=alerts & labels, minlength=n).astype(np.int64)
    return [
        DailyPoint(
            rule,
            day_name(first + i),
            int(count[i]),
            int(pos[i]),
            int(fired[i]),
            int(hits[i]),
            _ratio(int(hits[i]), int(fired[i])),
        )
        for i in range(n)
    ]
