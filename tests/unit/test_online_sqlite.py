"""The online sink on the embedded SQLite store, read back through Feast, against the SQL reference.

The scenario (also run on Redis by tests/integration/test_feast_online_redis.py): the whole
changelog in order, then older rows replayed on top, then updates within one second; after
each step every entity's online value must be the reference's as-of value at the horizon
(or the newest fabricated update), never an older one.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import OfflineStoreSettings, OnlineStoreSettings, Settings
from pipelines.errors import SinkError
from pipelines.feast_repo import apply, read_online
from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.batch import max_event_time, run_pipeline
from pipelines.sinks.online import OnlineSink
from pipelines.sinks.tables import changelog_schema
from tests.reference import MIN, Reference
from tests.unit.test_features_exact import T0, random_events

CREATED = 1_800_000_000_000


def _comparable(kind: str, value: Any) -> Any:
    """Online timestamps are whole seconds in Feast's format: compare on the second."""
    if value is None:
        return None
    if kind == "timestamp":
        return int(value.timestamp()) if hasattr(value, "timestamp") else int(value) // 1000
    return value


def assert_online_is(store: Any, view_name: str, expected: dict[str, dict[str, Any]],
                     event_ms: Mapping[str, int | None]) -> None:
    """Every key's online values and event time equal the expectation (None: not found)."""
    view = PIPELINE.view(view_name)
    keys = sorted(expected)
    got = {r.key: r for r in read_online(store, view, keys)}
    for key in keys:
        row = got[key]
        assert row.event_time_ms == event_ms[key], (view_name, key)
        for f in view.features:
            want = _comparable(f.value_type, expected[key][f.name])
            have = _comparable(f.value_type, row.values[f.name])
            assert have == want, (view_name, key, f.name, have, want)


def _write(sink: OnlineSink, view: str, rows: list[dict[str, Any]], chunk: int) -> None:
    schema = changelog_schema(PIPELINE.view(view))
    for i in range(0, len(rows), chunk):
        sink.write(f"features/{view}", schema, rows[i:i + chunk])


def run_scenario(settings: Settings, project: str, seed: int = 5) -> OnlineSink:
    """The whole online scenario on the store ``settings`` name; returns the sink."""
    events = random_events(seed)
    horizon = max_event_time(PIPELINE, events)
    assert horizon is not None
    changelogs = run_pipeline(PIPELINE, events, horizon, created_ms=CREATED)
    ref = Reference(events)
    sink = OnlineSink(settings, project=project)
    store = apply(settings, project=project)
    expected: dict[str, dict[str, dict[str, Any]]] = {}
    event_ms: dict[str, dict[str, int | None]] = {}
    for view_name, changelog in changelogs.items():
        key = PIPELINE.view(view_name).entity.join_key
        keys = sorted({str(r[key]) for r in changelog.rows})
        assert len(keys) >= 3
        expected[view_name] = {r[key]: r for r in ref.as_of(view_name, [(k, horizon)
                                                                         for k in keys])}
        expected[view_name]["nobody"] = dict.fromkeys(PIPELINE.view(view_name).feature_names)
        event_ms[view_name] = {k: max(r["event_timestamp"] for r in changelog.rows
                                      if str(r[key]) == k) for k in keys}
        event_ms[view_name]["nobody"] = None

    # 1. the whole changelog, in order, in small batches
    for view_name, changelog in changelogs.items():
        _write(sink, view_name, changelog.rows, chunk=37)
        assert_online_is(store, view_name, expected[view_name], event_ms[view_name])

    # 2. a replay of older rows on top (as after a restart), in shuffled batches and whole
    rnd = random.Random(seed)
    for view_name, changelog in changelogs.items():
        older = list(changelog.rows[: len(changelog.rows) // 2])
        rnd.shuffle(older)
        _write(sink, view_name, list(reversed(changelog.rows)), chunk=len(changelog.rows))
        _write(sink, view_name, older, chunk=50)
        assert_online_is(store, view_name, expected[view_name], event_ms[view_name])
    assert sink.stats.applied < sink.stats.entities  # the replays were refused

    # 3. updates within one second: the later one wins, in separate or in one batch
    view = PIPELINE.view("user_features")
    key = next(k for k in sorted(expected["user_features"]) if k != "nobody")
    second = (horizon // 1000 + 5) * 1000

    def update(ms: int, count: int) -> dict[str, Any]:
        row = {**expected["user_features"][key], "user_id": key, "event_timestamp": ms,
               "created_timestamp": CREATED}
        row["user_bid_count_5m"] = count
        row["user_order_amount_avg_24h"] = None  # decay to null is an ordinary update
        return row

    steps = [([update(second + 100, 111)], second + 100, 111),
             ([update(second + 700, 222)], second + 700, 222),
             ([update(second + 950, 444), update(second + 800, 333)], second + 950, 444),
             ([update(second + 100, 111)], second + 950, 444)]
    for rows, want_ms, want_count in steps:
        _write(sink, "user_features", rows, chunk=len(rows))
        want = {key: {**expected["user_features"][key], "user_bid_count_5m": want_count,
                      "user_order_amount_avg_24h": None}}
        assert_online_is(store, view.name, want, {key: want_ms})
    return sink


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(
        online_store=OnlineStoreSettings(type="sqlite", sqlite_path=tmp_path / "online.db"),
        offline_store=OfflineStoreSettings(uri=str(tmp_path / "offline")),
    )


def test_sqlite_online_values_follow_the_changelog(sqlite_settings: Settings) -> None:
    sink = run_scenario(sqlite_settings, "online_sqlite")
    assert sink.outages.outages == 0
    sink.close()


def test_decay_to_zero_and_null_reaches_the_online_store(sqlite_settings: Settings) -> None:
    # One stream with chat only at T0; the run goes on to T0 + 10 min elsewhere, so the
    # stream's 1-minute and 5-minute windows empty out before the horizon.
    chat = {"event_id": "c1", "event_time": T0, "stream_id": "quiet", "seller_id": "s1",
            "user_id": "u1", "message_length": 5, "flagged": True}
    later = {**chat, "event_id": "c2", "event_time": T0 + 10 * MIN, "stream_id": "busy"}
    events: dict[str, list[dict[str, Any]]] = {"livestream.chat_message": [chat, later]}
    horizon = T0 + 10 * MIN
    rows = run_pipeline(PIPELINE, events, horizon, created_ms=CREATED)["stream_features"].rows
    sink = OnlineSink(sqlite_settings, project="decay")
    store = apply(sqlite_settings, project="decay")
    _write(sink, "stream_features", rows, chunk=1)
    want = {r["stream_id"]: r for r in Reference(events).as_of("stream_features",
                                                                [("quiet", horizon)])}
    assert want["quiet"]["stream_chat_messages_1m"] == 0
    assert want["quiet"]["stream_flagged_chat_ratio_5m"] is None
    assert_online_is(store, "stream_features", want, {"quiet": T0 + 5 * MIN})


def test_sqlite_table_keeps_millisecond_event_times(sqlite_settings: Settings) -> None:
    sink = OnlineSink(sqlite_settings, project="ms")
    row = {"seller_id": "s9", "event_timestamp": 1_700_000_000_123,
           "created_timestamp": CREATED, "seller_gmv_1h": 5, "seller_order_count_1h": 1,
           "seller_unique_buyers_1h": 1, "seller_new_account_order_share_1h": 0.0}
    _write(sink, "seller_features", [row], chunk=1)
    sink.close()
    db = sqlite3.connect(sqlite_settings.online_store.sqlite_path)
    stored = db.execute('SELECT DISTINCT event_ts_ms FROM "ms_seller_features"').fetchall()
    assert stored == [(1_700_000_000_123,)]


def test_rows_that_do_not_fit_the_view_raise_sink_error(sqlite_settings: Settings) -> None:
    sink = OnlineSink(sqlite_settings, project="bad")
    schema = changelog_schema(PIPELINE.view("seller_features"))
    with pytest.raises(SinkError, match="not a feature view"):
        sink.write("events/livestream.bid_placed", schema, [{"x": 1}])
    with pytest.raises(SinkError, match="does not fit view seller_features"):
        sink.write("features/seller_features", schema,
                   [{"seller_id": "s1", "event_timestamp": 1, "seller_gmv_1h": "lots"}])
