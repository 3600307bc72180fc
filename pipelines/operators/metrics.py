"""The pipeline's metrics, counted in Python and pushed to Flink's metric system in batches.

Names and labels are those of deploy/grafana/README.md (the dashboard reads them):
every metric lives in the ``livefeat`` group; a label is a key-value subgroup.

Why batches: in thread mode every call from Python into a Flink object is a call
into the JVM, and such a call costs as much as processing a record. Counting in a
dict and pushing the increments every :data:`PUSH_INTERVAL_S` (and when the task
closes) keeps the cost per record to a dict update. Metrics are not checkpointed
(Flink's are not either): a restarted task starts its counters at 0, which
Prometheus' ``rate()`` and ``increase()`` treat as a reset.

Gauges are pushed distributions, never ``gauge(callable)``: in thread mode the
JVM would call the Python callable from its own threads, which crashed the
TaskManager (see deploy/grafana/README.md).
"""

from __future__ import annotations

import time
from typing import Any

PUSH_INTERVAL_S = 0.5

# A counter: (name, label key or "", label value or "").
CounterId = tuple[str, str, str]


class PipelineMetrics:
    """Counters and last-value gauges of one operator instance.

    Args:
        group: the operator's metric group (``runtime_context.get_metrics_group()``),
            or None to count without exporting (the batch runtime, tests).
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(self, group: Any | None, clock: Any = time.monotonic) -> None:
        self._root = None if group is None else group.add_group("livefeat")
        self._clock = clock
        self._pending: dict[CounterId, int] = {}
        self._gauges: dict[str, int] = {}
        self._counters: dict[CounterId, Any] = {}
        self._distributions: dict[str, Any] = {}
        self._next_push = clock() + PUSH_INTERVAL_S
        self.totals: dict[CounterId, int] = {}
        """Everything counted so far (pushed or not), for logs and tests."""

    def inc(self, name: str, n: int = 1, label: tuple[str, str] | None = None) -> None:
        """Add ``n`` to counter ``name`` (in the ``label`` key-value subgroup if given)."""
        key: CounterId = (name, *label) if label else (name, "", "")
        self._pending[key] = self._pending.get(key, 0) + n
        self.totals[key] = self.totals.get(key, 0) + n
        self.maybe_push()

    def set_gauge(self, name: str, value: int) -> None:
        """Set the last value of gauge ``name`` (pushed with the counters)."""
        self._gauges[name] = value
        self.maybe_push()

    def maybe_push(self) -> None:
        """Push if the interval has passed (cheap to call per record)."""
        if self._clock() >= self._next_push:
            self.push()

    def push(self) -> None:
        """Send every pending increment and gauge value to Flink now."""
        self._next_push = self._clock() + PUSH_INTERVAL_S
        if self._root is None:
            self._pending.clear()
            return
        for key, n in self._pending.items():
            if n:
                self._counter(key).inc(n)
        self._pending.clear()
        for name, value in self._gauges.items():
            dist = self._distributions.get(name)
            if dist is None:
                dist = self._distributions[name] = self._root.distribution(name)
            dist.update(value)

    def _counter(self, key: CounterId) -> Any:
        counter = self._counters.get(key)
        if counter is None:
            assert self._root is not None  # only called when exporting
            name, label_key, label_value = key
            group = self._root.add_group(label_key, label_value) if label_key else self._root
            counter = self._counters[key] = group.counter(name)
        return counter


__all__ = ["PUSH_INTERVAL_S", "PipelineMetrics"]
