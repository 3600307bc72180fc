"""End to end: an event just inside and just outside the out-of-orderness bound.

The spec: an event older than the watermark when it arrives is late and quarantined;
events within the bound are applied exactly. With a bound ``B`` the watermark after a
record at ``T`` is ``T - B - 1`` (Flink's bounded out-of-orderness), so on the same
partition an event at ``T - B`` is still applied and one at ``T - B - 1`` is late.

Hand-written bids on one partition, published to the real broker and run through the
streaming job bounded, at the default bound and at a configured one. The expected
accepted set is written down here from the rule above, not taken from the job; the
changelog of every view must equal the SQL reference over exactly that set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaProducer

from pipelines import topics
from pipelines.config import Settings
from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.streaming import run_pipeline
from pipelines.runtime.summary import RunSummary
from pipelines.sinks.parquet import read_dataset
from pipelines.sources.offsets import kafka_python_config
from schemas.codec import SingleObjectCodec
from schemas.store import SchemaStore
from tests.integration.exact import fresh_stack, read_changelog_rows
from tests.reference import Reference

pytestmark = pytest.mark.integration

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
T = T0 + 60_000  # the partition's largest event time when the out-of-order bids arrive


def bids(bound: int) -> list[tuple[dict[str, Any], bool]]:
    """The publish sequence on one partition: (bid, applied?) by the rule of the module."""

    def bid(n: int, event_time: int, user: str = "u1") -> dict[str, Any]:
        return {
            "event_id": f"bid-{n}", "event_time": event_time, "stream_id": "s1",
            "seller_id": "seller1", "auction_id": "a1", "user_id": user,
            "amount_cents": 100 + n, "currency": "USD",
        }

    return [
        (bid(0, T0), True),
        (bid(1, T), True),
        (bid(2, T - bound), True),  # exactly at the bound: inside
        (bid(3, T - bound - 1), False),  # one millisecond beyond it: late
        (bid(4, T - bound, user="u2"), True),  # same millisecond again, another user
        (bid(5, T - bound - 1, user="u2"), False),
        (bid(6, T + 1), True),  # the partition's maximum moves on by 1 ms
        (bid(7, T + 1 - bound), True),  # the bound moved with it
        (bid(8, T - bound), False),  # was inside before the last bid, is late now
    ]


@pytest.fixture(scope="module", params=[None, 1_500], ids=["default-bound", "bound-1500ms"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        dict[str, Any]]:
    root = tmp_path_factory.mktemp("bound")
    flink = {} if request.param is None else {"out_of_orderness_ms": request.param}
    with fresh_stack(root, **flink) as settings:
        bound = settings.flink.out_of_orderness_ms
        sequence = bids(bound)
        encode = SingleObjectCodec(SchemaStore.load()).encoder(topics.BID_PLACED, 1)
        producer = KafkaProducer(**kafka_python_config(settings.kafka))
        try:
            for record, _ in sequence:
                producer.send(topics.BID_PLACED, value=encode(record), key=b"s1", partition=0,
                              timestamp_ms=record["event_time"]).get(timeout=30)
        finally:
            producer.close()
        summary = run_pipeline(settings, "marketplace", bounded=True)
        assert summary is not None
        yield {"settings": settings, "summary": summary, "sequence": sequence, "bound": bound}


def test_exactly_the_events_beyond_the_bound_are_late(run: dict[str, Any]) -> None:
    summary: RunSummary = run["summary"]
    settings: Settings = run["settings"]
    late_offsets = [i for i, (_, applied) in enumerate(run["sequence"]) if not applied]
    assert summary.balanced
    assert summary.quarantined == {"late": len(late_offsets)}
    assert summary.accepted[topics.BID_PLACED] == len(run["sequence"]) - len(late_offsets)
    table = read_dataset(settings.offline_store.uri, "quarantine",
                         columns=["topic", "partition", "offset", "reason"])
    held = sorted(zip(*(table.column(c).to_pylist() for c in ("topic", "partition", "offset",
                                                              "reason")), strict=True))
    assert held == [(topics.BID_PLACED, 0, o, "late") for o in late_offsets]


@pytest.mark.parametrize("view", [v.name for v in PIPELINE.views])
def test_inside_events_are_applied_exactly(run: dict[str, Any], view: str) -> None:
    settings: Settings = run["settings"]
    applied = [
        {**record, "_partition": 0, "_offset": offset}
        for offset, (record, ok) in enumerate(run["sequence"]) if ok
    ]
    ref = Reference({topics.BID_PLACED: applied})
    key = PIPELINE.view(view).entity.join_key
    names = ref.feature_names(view)
    want = ref.changelog(view, run["summary"].horizon_ms)
    try:
        got = read_changelog_rows(settings.offline_store.uri, PIPELINE.view(view))
    except FileNotFoundError:  # a view bids do not feed (sellers: orders only) writes nothing
        got = []
    assert [(r[key], r["event_timestamp"], *(r[n] for n in names)) for r in got] == [
        (r[key], r["event_timestamp"], *(r[n] for n in names)) for r in want
    ]


def test_user_bid_count_sees_the_inside_bids(run: dict[str, Any]) -> None:
    """A plain restatement of the reference for one value a person can check by eye:
    at T + 1, u1's 5-minute bid count holds bids 0, 1, 2, 6 and 7 (bid 3 and 8 were late)."""
    ref_rows = read_changelog_rows(run["settings"].offline_store.uri,
                                   PIPELINE.view("user_features"))
    u1 = [r for r in ref_rows if r["user_id"] == "u1" and r["event_timestamp"] <= T + 1]
    assert u1[-1]["user_bid_count_5m"] == 5
    assert u1[-1]["user_bid_amount_sum_1h"] == 100 + 101 + 102 + 106 + 107
