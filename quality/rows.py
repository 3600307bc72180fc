"""Row-level rules applied to every decoded record before it can reach a feature.

Each rule has a machine-readable reason code, used in the quarantine and in the
counters. These rules are plain Python so they cost microseconds per record in the
stream; the Great Expectations suites in ``quality/`` express the same
expectations for batch validation and reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class RowRules:
    """Row expectations of the reference pipeline.

    Attributes:
        currencies: accepted ISO 4217 codes (the reference pipeline sums USD only).
        max_future_ms: how far event time may lie ahead of the reference time
            (the watermark, or the record's own Kafka timestamp when later).
    """

    currencies: frozenset[str] = frozenset({"USD"})
    max_future_ms: int = HOUR_MS

    def violation(
        self, record: Mapping[str, Any], time_field: str, reference_ms: int
    ) -> tuple[str, str] | None:
        """``(reason, detail)`` of the first rule ``record`` breaks, or None when it is valid."""
        for name, value in record.items():
            if name.endswith("_id") and isinstance(value, str) and not value.strip():
                return "empty_id", f"{name} is empty"
        amount = record.get("amount_cents")
        if amount is not None and amount <= 0:
            return "non_positive_amount", f"amount_cents = {amount}"
        currency = record.get("currency")
        if currency is not None and currency not in self.currencies:
            return "unsupported_currency", f"currency = {currency!r}"
        event_time = record.get(time_field)
        if event_time is not None and event_time > reference_ms + self.max_future_ms:
            ahead = (event_time - reference_ms) / HOUR_MS
            return "future_event_time", f"{time_field} is {ahead:.1f} h ahead of the watermark"
        return None
