"""Point-in-time retrieval against independent references, leakage, as-known-at, empty history.

References:
- plain SQL (DuckDB) over the changelog rows: a range join ``event_timestamp <= t``
  (and ``created_timestamp <= t``) and ROW_NUMBER picking the latest row;
- the feature SQL of tests/reference.py over the raw events (features as of t
  computed from scratch, no changelog at all).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.backtest.labelset import Labels, normalize_labels
from pipelines.backtest.rules import Rule, RuleSet, compile_rules
from pipelines.backtest.run import BacktestResult, run_backtest
from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.batch import max_event_time, run_pipeline
from pipelines.sinks.parquet import ParquetSink
from pipelines.sinks.tables import changelog_schema
from tests.reference import DAY, MIN, Reference
from tests.unit.test_features_exact import T0, random_events

KEYS = ["user_id", "seller_id", "stream_id"]
VIEWS = ["user_features", "seller_features", "stream_features"]


def every_feature_rules() -> RuleSet:
    """One rule per view that reads every feature of the view (and the read-time one)."""
    rules = []
    for view in PIPELINE.views:
        names = [f.name for f in view.features]
        if view.name == "user_features":
            names.append("user_account_age_days")
        rules.append(Rule(f"all_{view.name}", " or ".join(f"{n} is not None" for n in names)))
    return compile_rules(rules, PIPELINE, "test")


def write_changelogs(root: Path, rows_by_view: dict[str, list[dict[str, Any]]]) -> str:
    sink = ParquetSink(str(root))
    for name, rows in rows_by_view.items():
        view = PIPELINE.view(name)
        half = len(rows) // 2  # two batches, so several files per partition
        sink.write(f"features/{name}", changelog_schema(view), rows[:half])
        sink.write(f"features/{name}", changelog_schema(view), rows[half:])
    return str(root)


def plain(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with timestamps as epoch-ms ints."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            table = table.set_column(i, field.name, pc.cast(table.column(i), pa.int64()))
    return table.to_pylist()


def labels_of(points: list[dict[str, Any]]) -> Labels:
    table = pa.table(
        {
            "label_id": [p["label_id"] for p in points],
            **{k: pa.array([p.get(k) for p in points], pa.string()) for k in KEYS},
            "event_time": pa.array([p["t"] for p in points], pa.int64()),
            "label": [p.get("label", False) for p in points],
        }
    )
    return normalize_labels(table, KEYS, "test labels")


@pytest.fixture(scope="module")
def history() -> dict[str, Any]:
    """Random traffic, its changelogs with write latencies and replayed duplicates, labels."""
    rnd = random.Random(5)
    events = random_events(21, n=1200)
    horizon = max_event_time(PIPELINE, events)
    assert horizon is not None
    rows_by_view: dict[str, list[dict[str, Any]]] = {}
    for name, changelog in run_pipeline(PIPELINE, events, horizon_ms=horizon).items():
        rows = []
        for r in changelog.rows:
            # Written 0-90 s after the fact, some 20 min late (a stalled job).
            latency = rnd.choice([0, 0, 1, 5_000, 90_000, 20 * MIN])
            rows.append({**r, "created_timestamp": r["event_timestamp"] + latency})
        replays = [
            {**r, "created_timestamp": r["created_timestamp"] + rnd.choice([1, 60_000, DAY])}
            for r in rnd.sample(rows, len(rows) // 5)
        ]
        rows_by_view[name] = rows + replays
    users = [*sorted({r["user_id"] for r in rows_by_view["user_features"]}), "nobody", None]
    sellers = [*sorted({r["seller_id"] for r in rows_by_view["seller_features"]}), "nobody"]
    streams = [*sorted({r["stream_id"] for r in rows_by_view["stream_features"]}), None]
    points = []
    for i in range(700):
        points.append(
            {
                "label_id": i,
                "user_id": rnd.choice(users),
                "seller_id": rnd.choice(sellers),
                "stream_id": rnd.choice(streams),
                "t": T0 - 10 * MIN + rnd.randrange(0, horizon - T0 + 10 * MIN),
                "label": rnd.random() < 0.3,
            }
        )
    # Exactly at change points and at their created times, and one ms before.
    for name, key in zip(VIEWS, KEYS, strict=True):
        for r in rnd.sample(rows_by_view[name], 60):
            for t in (r["event_timestamp"], r["event_timestamp"] - 1, r["created_timestamp"]):
                point = {"label_id": len(points), "t": min(t, horizon), key: r[key]}
                points.append(point)
    return {"events": events, "horizon": horizon, "rows": rows_by_view, "points": points}


def sql_reference(
    rows: list[dict[str, Any]], points: list[dict[str, Any]], view: str, as_known_at: bool
) -> dict[int, dict[str, Any]]:
    """Latest row with event_timestamp <= t (and created_timestamp <= t) per label, in SQL."""
    key = PIPELINE.view(view).entity.join_key
    db = duckdb.connect()
    db.register("changelog_df", pd.DataFrame(rows))
    db.register(
        "labels_df",
        pd.DataFrame([{"label_id": p["label_id"], "k": p.get(key), "t": p["t"]} for p in points]),
    )
    known = "AND c.created_timestamp <= l.t" if as_known_at else ""
    result = db.execute(
        f"""
        SELECT l.label_id, l.k IS NOT NULL AS has_key, c.*
        FROM labels_df l LEFT JOIN changelog_df c
          ON c.{key} = l.k AND c.event_timestamp <= l.t {known}
        QUALIFY row_number() OVER (
            PARTITION BY l.label_id
            ORDER BY c.event_timestamp DESC NULLS LAST, c.created_timestamp ASC NULLS LAST) = 1
        """
    )
    names = [d[0] for d in result.description]
    out = {}
    empty = Reference({}).as_of(view, [("nobody", T0)])[0]
    features = [f.name for f in PIPELINE.view(view).features]
    for values in result.fetchall():
        row = dict(zip(names, values, strict=True))
        if row["event_timestamp"] is None:
            for f in features:
                row[f] = empty[f] if row["has_key"] else None
        out[row["label_id"]] = row
    return out


def run(root: str, points: list[dict[str, Any]], as_known_at: bool) -> BacktestResult:
    return run_backtest(every_feature_rules(), labels_of(points), root, as_known_at=as_known_at)


@pytest.mark.parametrize("as_known_at", [False, True])
def test_retrieval_equals_sql_as_of_join(
    history: dict[str, Any], tmp_path: Path, as_known_at: bool
) -> None:
    root = write_changelogs(tmp_path, history["rows"])
    result = run(root, history["points"], as_known_at)
    got = plain(result.rows)
    assert len(got) == len(history["points"])  # no labelled event dropped
    for view in VIEWS:
        want = sql_reference(history["rows"][view], history["points"], view, as_known_at)
        features = [f.name for f in PIPELINE.view(view).features]
        used = 0
        for row in got:
            ref = want[row["label_id"]]
            assert [row[f] for f in features] == [ref[f] for f in features], (view, row)
            assert row[f"{view}__event_timestamp"] == ref["event_timestamp"]
            assert row[f"{view}__created_timestamp"] == ref["created_timestamp"]
            used += ref["event_timestamp"] is not None
        assert used > 300  # the labels exercise real rows, not only empty histories


def test_values_equal_features_computed_from_raw_events(
    history: dict[str, Any], tmp_path: Path
) -> None:
    """As of t, the backtest sees what the SQL over the raw events computes for t."""
    root = write_changelogs(tmp_path, history["rows"])
    points = [p for p in history["points"] if p.get("user_id") is not None][:400]
    got = plain(run(root, points, as_known_at=False).rows)
    ref = Reference(history["events"])
    for view, key in zip(VIEWS, KEYS, strict=True):
        mine = [(p, r) for p, r in zip(points, got, strict=True) if p.get(key) is not None]
        want = ref.as_of(view, [(p[key], p["t"]) for p, _ in mine])
        by_point = {(w[key], w["event_timestamp"]): w for w in want}
        names = ref.feature_names(view)
        for p, row in mine:
            expected = by_point[(p[key], p["t"])]
            assert [row[n] for n in names] == [expected[n] for n in names], (view, p)
    age = [r for r in got if r["user_account_created_at"] is not None]
    assert age and all(
        r["user_account_age_days"] == (r["event_time"] - r["user_account_created_at"]) / DAY
        for r in age
    )


def seller_row(seller: str, t: int, created: int, gmv: int) -> dict[str, Any]:
    return {
        "seller_id": seller,
        "event_timestamp": t,
        "created_timestamp": created,
        "seller_gmv_1h": gmv,
        "seller_order_count_1h": 1,
        "seller_unique_buyers_1h": 1,
        "seller_new_account_order_share_1h": 0.5,
    }


@pytest.mark.parametrize("as_known_at", [False, True])
def test_no_feature_row_after_t_is_ever_used(tmp_path: Path, as_known_at: bool) -> None:
    """Each labelled seller has true rows up to t and future rows after t that were written
    (created_timestamp) long before t; only the latest true row may ever be used."""
    rnd = random.Random(17)
    rows: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    expected: list[int] = []
    for i in range(400):
        seller, t = f"s{i}", T0 + rnd.randrange(0, DAY)
        past = sorted(rnd.sample(range(t - DAY, t + 1), rnd.randint(0, 4)))
        for n, e in enumerate(past):
            rows.append(seller_row(seller, e, e, gmv=1000 * i + n))
        for e in (t + 1, t + rnd.randint(2, 10 * MIN), t + DAY):
            rows.append(seller_row(seller, e, T0 - DAY, gmv=-(1000 * i + 1)))  # poison
        points.append({"label_id": i, "seller_id": seller, "t": t})
        expected.append(1000 * i + len(past) - 1 if past else 0)
    ParquetSink(str(tmp_path)).write(
        "features/seller_features", changelog_schema(PIPELINE.view("seller_features")), rows
    )
    rules = compile_rules([Rule("r", "seller_gmv_1h < 0")], PIPELINE, "test")
    result = run_backtest(rules, labels_of(points), str(tmp_path), as_known_at=as_known_at)
    got = plain(result.rows)
    assert [r["seller_gmv_1h"] for r in got] == expected
    assert not any(r["alert_r"] for r in got)  # no poison value ever reached the rule
    for row in got:
        used = row["seller_features__event_timestamp"]
        assert used is None or used <= row["event_time"]


def test_a_row_written_late_is_invisible_at_t_only_as_known_at(tmp_path: Path) -> None:
    view = PIPELINE.view("seller_features")

    def row(t: int, created: int, gmv: int) -> dict[str, Any]:
        return seller_row("s1", t, created, gmv)

    rows = [
        row(T0, T0 + 10, 100),  # known 10 ms after it became true
        row(T0 + 1000, T0 + 9000, 200),  # became true at +1 s, written only at +9 s
        row(T0 + 2000, T0 + 2000, 300),  # on time, after the late one in event time
    ]
    sink = ParquetSink(str(tmp_path))
    sink.write("features/seller_features", changelog_schema(view), rows)
    rules = compile_rules([Rule("r", "seller_gmv_1h > 150")], PIPELINE, "test")
    times = [T0 - 1, T0, T0 + 5, T0 + 10, T0 + 1000, T0 + 1500, T0 + 2000, T0 + 9000]
    points = [{"label_id": i, "seller_id": "s1", "t": t} for i, t in enumerate(times)]
    as_of = [
        r["seller_gmv_1h"]
        for r in plain(run_backtest(rules, labels_of(points), str(tmp_path)).rows)
    ]
    known = [
        r["seller_gmv_1h"]
        for r in plain(run_backtest(rules, labels_of(points), str(tmp_path), as_known_at=True).rows)
    ]
    assert as_of == [0, 100, 100, 100, 200, 200, 300, 300]
    # As known at: the +1 s row is invisible until +9 s, the previous row stays in force
    # (not an empty value), and the on-time +2 s row is visible at +2 s.
    assert known == [0, 0, 0, 100, 100, 100, 300, 300]


def test_replayed_duplicate_is_known_from_its_first_write(tmp_path: Path) -> None:
    view = PIPELINE.view("seller_features")
    base = {
        "seller_id": "s1",
        "seller_order_count_1h": 1,
        "seller_unique_buyers_1h": 1,
        "seller_new_account_order_share_1h": None,
    }
    rows = [
        {**base, "event_timestamp": T0, "created_timestamp": T0 + 500, "seller_gmv_1h": 7},
        {**base, "event_timestamp": T0, "created_timestamp": T0 + 100, "seller_gmv_1h": 7},
        {**base, "event_timestamp": T0, "created_timestamp": T0 + 900, "seller_gmv_1h": 7},
    ]
    ParquetSink(str(tmp_path)).write("features/seller_features", changelog_schema(view), rows)
    rules = compile_rules([Rule("r", "seller_gmv_1h > 1")], PIPELINE, "test")
    points = [{"label_id": i, "seller_id": "s1", "t": t} for i, t in enumerate([T0 + 99, T0 + 100])]
    got = plain(run_backtest(rules, labels_of(points), str(tmp_path), as_known_at=True).rows)
    assert [r["seller_gmv_1h"] for r in got] == [0, 7]
    assert got[1]["seller_features__created_timestamp"] == T0 + 100
    plain_rows = plain(run_backtest(rules, labels_of(points), str(tmp_path)).rows)
    assert [r["seller_features__created_timestamp"] for r in plain_rows] == [T0 + 100] * 2


def test_entities_without_history_get_empty_values_and_are_kept(tmp_path: Path) -> None:
    events = random_events(3, n=300)
    rows = run_pipeline(PIPELINE, events, created_ms=T0)
    root = write_changelogs(tmp_path, {n: c.rows for n, c in rows.items()})
    first = min(r["event_timestamp"] for r in rows["user_features"].rows if r["user_id"] == "u0")
    points = [
        {
            "label_id": 0,
            "user_id": "stranger",
            "seller_id": "nobody",
            "stream_id": "nowhere",
            "t": T0 + DAY,
        },
        {"label_id": 1, "user_id": "u0", "seller_id": "s0", "stream_id": "st0", "t": first - 1},
        {"label_id": 2, "user_id": None, "seller_id": None, "stream_id": None, "t": T0 + DAY},
    ]
    result = run(root, points, as_known_at=False)
    got = plain(result.rows)
    assert [r["label_id"] for r in got] == [0, 1, 2]
    for row in got[:2]:
        assert row["user_bid_count_5m"] == 0 and row["user_bid_amount_sum_1h"] == 0
        assert row["user_order_count_24h"] == 0 and row["user_distinct_streams_1h"] == 0
        assert row["user_distinct_payment_methods_24h"] == 0
        assert row["user_order_amount_avg_24h"] is None
        assert row["user_account_created_at"] is None and row["user_is_verified"] is None
        assert row["user_risk_tier"] is None and row["user_account_age_days"] is None
        assert row["user_features__event_timestamp"] is None
    assert got[0]["seller_gmv_1h"] == 0 and got[0]["seller_new_account_order_share_1h"] is None
    assert got[0]["stream_viewers_5m"] == 0 and got[0]["stream_flagged_chat_ratio_5m"] is None
    # No key at all: the entity is unknown, not empty: every value is null.
    assert got[2]["user_bid_count_5m"] is None and got[2]["seller_gmv_1h"] is None
    assert any("no user_id" in n for n in result.notes)
    assert any("no visible row" in n for n in result.notes)
