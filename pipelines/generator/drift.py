"""Drift injection: multiply a numeric field by a factor for a period of event time.

A quality gate must notice when data change: ``livefeat generate --drift
livestream.order_placed.amount_cents=1.2@+20m..+30m`` raises every order amount by 20 %
for ten minutes of event time, starting twenty minutes after the run's first event.
The simulated marketplace itself is untouched (same events, ids and times, same
random draws); only the published values change, so a run with drift and the same
run without it differ exactly in the drifted fields.

Spec: ``[SUBJECT.]FIELD=FACTOR@START..END``

* ``SUBJECT``: a reference topic (``livestream.order_placed``); omitted, every topic
  whose schema has ``FIELD`` drifts.
* ``FACTOR``: a positive number; integer fields are rounded to the nearest integer
  (ties to even), so the result is deterministic.
* ``START``/``END``: the period ``[START, END)`` of event time (the record's event time,
  ``updated_at`` for profiles): ISO-8601 (UTC unless an offset is given), epoch
  milliseconds, or ``+<n><unit>`` after the run's first event time (units ``ms``,
  ``s``, ``m``, ``h``; e.g. ``+90s``). ``END`` may be empty: until the run ends.

>>> d = parse_drift("livestream.order_placed.amount_cents=1.2@+10m..+20m", start_ms=0)
>>> (d.subject, d.field, d.factor, d.start_ms, d.end_ms)
('livestream.order_placed', 'amount_cents', 1.2, 600000, 1200000)
>>> d.apply({"amount_cents": 2500, "currency": "USD"})
{'amount_cents': 3000, 'currency': 'USD'}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipelines.errors import ConfigError
from pipelines.topics import REFERENCE_TOPICS

FOREVER_MS = 2**63 - 1
"""End of an open-ended period."""

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000}
_RELATIVE = re.compile(r"^\+(\d+(?:\.\d+)?)(ms|s|m|h)$")
_NUMERIC = frozenset({"int", "long", "float", "double"})
_FIX = "write e.g. livestream.order_placed.amount_cents=1.2@+10m..+20m (see docs/generator.md)"


def _bad(spec: str, problem: str, fix: str = _FIX) -> ConfigError:
    return ConfigError(problem, where=f"option --drift {spec!r}", fix=fix)


@dataclass(frozen=True)
class Drift:
    """Multiply ``field`` by ``factor`` in records with event time in ``[start_ms, end_ms)``.

    Attributes:
        field: the record field.
        factor: the multiplier (> 0).
        start_ms: first event time affected (epoch ms).
        end_ms: first event time no longer affected.
        subject: the only topic affected; None means every topic that has ``field``.
    """

    field: str
    factor: float
    start_ms: int
    end_ms: int = FOREVER_MS
    subject: str | None = None

    def __post_init__(self) -> None:
        where = f"{self.subject + '.' if self.subject else ''}{self.field}"
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise _bad(where, f"factor must be a positive number, got {self.factor}")
        if self.end_ms <= self.start_ms:
            raise _bad(where, "the period is empty: END must be later than START")
        if self.subject is not None and self.subject not in REFERENCE_TOPICS:
            raise _bad(where, f"{self.subject} is not a reference topic",
                       f"use one of {', '.join(REFERENCE_TOPICS)}")

    def applies(self, subject: str, time_ms: int) -> bool:
        """Whether a record of ``subject`` at event time ``time_ms`` drifts."""
        return (self.subject is None or self.subject == subject) and (
            self.start_ms <= time_ms < self.end_ms
        )

    def apply(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``record`` with the field multiplied (a missing or null field stays)."""
        out = dict(record)
        value = out.get(self.field)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return out
        scaled = value * self.factor
        out[self.field] = round(scaled) if isinstance(value, int) else scaled
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON form (for the manifest)."""
        return {
            "subject": self.subject, "field": self.field, "factor": self.factor,
            "start_ms": self.start_ms,
            "end_ms": None if self.end_ms == FOREVER_MS else self.end_ms,
        }


def _time(spec: str, text: str, start_ms: int, what: str) -> int:
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        return start_ms + round(float(relative.group(1)) * _UNITS_MS[relative.group(2)])
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _bad(spec, f"{what} {text!r} is not ISO-8601, epoch ms or +<n><unit>") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_drift(spec: str, start_ms: int) -> Drift:
    """Parse ``[SUBJECT.]FIELD=FACTOR@START..END`` (see the module docs).

    Args:
        spec: the option's text.
        start_ms: the run's first event time, the origin of ``+<n><unit>`` times.

    Raises:
        ConfigError: the spec is malformed.
    """
    target, eq, rest = spec.partition("=")
    factor_text, at, period = rest.partition("@")
    first, dots, last = period.partition("..")
    if not (eq and at and dots and target and first.strip()):
        raise _bad(spec, "expected [SUBJECT.]FIELD=FACTOR@START..END")
    subject, _, field = target.strip().rpartition(".")
    try:
        factor = float(factor_text)
    except ValueError as exc:
        raise _bad(spec, f"factor {factor_text!r} is not a number") from exc
    begin = _time(spec, first, start_ms, "START")
    end = _time(spec, last, start_ms, "END") if last.strip() else FOREVER_MS
    return Drift(field=field, factor=factor, start_ms=begin, end_ms=end, subject=subject or None)


def check_fields(drifts: tuple[Drift, ...], numeric_fields: Mapping[str, set[str]]) -> None:
    """Check each drift names a numeric field of its topic (of some topic, without one).

    Args:
        drifts: the drifts of a run.
        numeric_fields: per subject, the names of its numeric (non-timestamp) fields.

    Raises:
        ConfigError: a drift names a field no targeted topic has as a number.
    """
    for d in drifts:
        subjects = [d.subject] if d.subject else list(numeric_fields)
        if not any(d.field in numeric_fields.get(s, set()) for s in subjects):
            where = f"{d.subject + '.' if d.subject else ''}{d.field}"
            raise _bad(where, f"no numeric field {d.field} in {', '.join(subjects)}",
                       "name a number field of the topic's schema, e.g. amount_cents")


def numeric_fields(schema: Any) -> set[str]:
    """Top-level fields of an Avro record schema that are plain numbers (not timestamps)."""
    out = set()
    for f in schema.get("fields", []) if isinstance(schema, dict) else []:
        kind = f["type"]
        if isinstance(kind, list):  # a union such as ["null", "long"]
            kinds = [k for k in kind if k != "null"]
            kind = kinds[0] if len(kinds) == 1 else None
        if isinstance(kind, dict):
            kind = None if "logicalType" in kind else kind.get("type")
        if kind in _NUMERIC:
            out.add(str(f["name"]))
    return out
