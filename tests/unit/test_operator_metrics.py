"""PipelineMetrics: counts per record in Python, pushes increments to Flink in batches.

The metric group here records what a Flink metric group would receive (the calls
into the JVM); the real Flink path is exercised by the cluster tests.
"""

from __future__ import annotations

from typing import Any

from pipelines.operators.metrics import PUSH_INTERVAL_S, PipelineMetrics


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Counter:
    def __init__(self) -> None:
        self.value = 0
        self.calls = 0

    def inc(self, n: int = 1) -> None:
        self.value += n
        self.calls += 1


class _Distribution:
    def __init__(self) -> None:
        self.values: list[int] = []

    def update(self, value: int) -> None:
        self.values.append(value)


class _Group:
    """Flink's MetricGroup surface that PipelineMetrics uses: add_group, counter, distribution."""

    def __init__(self, path: tuple[str, ...] = ()) -> None:
        self.path = path
        self.registry: dict[tuple[str, ...], Any] = {}

    def add_group(self, name: str, value: str | None = None) -> _Group:
        child = _Group((*self.path, name) + ((value,) if value is not None else ()))
        child.registry = self.registry
        return child

    def counter(self, name: str) -> _Counter:
        return self.registry.setdefault((*self.path, name), _Counter())

    def distribution(self, name: str) -> _Distribution:
        return self.registry.setdefault((*self.path, name), _Distribution())


def test_increments_are_batched_until_the_interval_passes() -> None:
    clock, group = _Clock(), _Group()
    metrics = PipelineMetrics(group, clock=clock)
    for _ in range(1000):
        metrics.inc("accepted")
    assert group.registry == {}  # nothing sent to Flink yet: no per-record JVM calls
    clock.now += PUSH_INTERVAL_S
    metrics.inc("accepted")
    counter = group.registry[("livefeat", "accepted")]
    assert (counter.value, counter.calls) == (1001, 1)


def test_labels_are_key_value_subgroups_and_totals_are_kept() -> None:
    clock, group = _Clock(), _Group()
    metrics = PipelineMetrics(group, clock=clock)
    metrics.inc("quarantined", label=("reason", "late"))
    metrics.inc("quarantined", 2, label=("reason", "undecodable"))
    metrics.inc("quarantined", label=("reason", "late"))
    metrics.push()
    assert group.registry[("livefeat", "reason", "late", "quarantined")].value == 2
    assert group.registry[("livefeat", "reason", "undecodable", "quarantined")].value == 2
    assert metrics.totals == {("quarantined", "reason", "late"): 2,
                              ("quarantined", "reason", "undecodable"): 2}


def test_push_sends_only_new_increments_and_the_last_gauge_value() -> None:
    clock, group = _Clock(), _Group()
    metrics = PipelineMetrics(group, clock=clock)
    metrics.inc("changelog_rows", 5, label=("view", "user_features"))
    metrics.set_gauge("watermark_lag_ms", 10)
    metrics.set_gauge("watermark_lag_ms", 7)
    metrics.push()
    metrics.push()  # nothing pending: the counter is not touched again
    counter = group.registry[("livefeat", "view", "user_features", "changelog_rows")]
    assert (counter.value, counter.calls) == (5, 1)
    assert group.registry[("livefeat", "watermark_lag_ms")].values == [7, 7]


def test_without_a_group_it_only_counts() -> None:
    metrics = PipelineMetrics(None)
    metrics.inc("events_in", label=("topic", "t"))
    metrics.push()
    assert metrics.totals == {("events_in", "topic", "t"): 1}
