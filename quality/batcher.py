"""Cut a stream of feature rows into micro-batches bounded by size and event-time span.

Pure Python, no GX, no Flink: the stream feeds rows as they become final (after
the watermark passed them, so in event-time order per key) and validates each
batch that comes out.

>>> b = MicroBatcher("user_features", max_rows=3, max_span_ms=60_000)
>>> [len(x.rows) for r in range(7) for x in b.add({"event_timestamp": r * 1000})]
[3, 3]
>>> [len(x.rows) for x in b.flush()]
[1]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class MicroBatch:
    """Rows of one view collected for one validation."""

    view: str
    first_ms: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0

    @property
    def batch_id(self) -> str:
        """``<view>-<first event time, UTC, ISO>-<sequence>``: unique within a run."""
        t = datetime.fromtimestamp(self.first_ms / 1000, tz=UTC)
        return f"{self.view}-{t:%Y%m%dT%H%M%S.%f}"[:-3] + f"Z-{self.seq:06d}"


class MicroBatcher:
    """Closes a batch at ``max_rows`` rows, or when a row's event time is ``max_span_ms``
    or more after the batch's first row.

    With ``aligned``, batches are tumbling event-time windows instead: a batch holds the
    rows with ``start <= t < start + max_span_ms``, ``start`` a multiple of
    ``max_span_ms`` (and the batch's ``first_ms``), whatever their number. The gate cuts
    a topic's accepted events so (events suites), because they reach it in arrival
    order, not in event-time order as changelog rows do.

    Args:
        view: feature view (or topic) the rows belong to.
        max_rows: size bound (``GateConfig.batch_max_rows``; not used when aligned).
        max_span_ms: event-time bound (``GateConfig.batch_max_ms``).
        time_field: the row field holding event time (epoch ms).
        aligned: cut tumbling windows (rows must come in event-time order).
    """

    def __init__(
        self, view: str, max_rows: int, max_span_ms: int, time_field: str = "event_timestamp",
        aligned: bool = False,
    ) -> None:
        if max_rows < 1 or max_span_ms < 1:
            raise ValueError("max_rows and max_span_ms must be positive")
        self.view = view
        self.max_rows = max_rows
        self.max_span_ms = max_span_ms
        self.time_field = time_field
        self.aligned = aligned
        self._current: MicroBatch | None = None
        self._seq = 0

    def add(self, row: dict[str, Any]) -> list[MicroBatch]:
        """Add one row; returns the batches this closed (zero, one, or two)."""
        t = int(row[self.time_field])
        done: list[MicroBatch] = []
        current = self._current
        # tumbling windows: a batch is named by its window's start; else by its first row
        start = t - t % self.max_span_ms if self.aligned else t
        if current is not None and (
            current.first_ms != start if self.aligned else t - current.first_ms >= self.max_span_ms
        ):
            done.append(current)
            current = None
        if current is None:
            self._seq += 1
            current = MicroBatch(self.view, start, seq=self._seq)
        current.rows.append(row)
        if not self.aligned and len(current.rows) >= self.max_rows:
            done.append(current)
            current = None
        self._current = current
        return done

    def flush(self) -> list[MicroBatch]:
        """Close the open batch (at the end of a bounded run, or on a timer)."""
        current, self._current = self._current, None
        return [current] if current is not None and current.rows else []
