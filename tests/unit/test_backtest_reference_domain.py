"""The reference domain end to end: generated traffic, its labels, the reference rules.

The offline store is built the way a bounded run leaves it (accepted-event log and
changelogs), with the batch runtime standing in for the Flink job.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipelines import topics
from pipelines.backtest import load_rules
from pipelines.backtest.labels import (
    chargeback_labels,
    labels_from_manifest,
    read_orders,
    simulated_labels,
)
from pipelines.backtest.labelset import normalize_labels
from pipelines.backtest.run import run_backtest
from pipelines.cli.backtest_cmd import backtest
from pipelines.generator import Generation, GeneratorOptions
from pipelines.generator.manifest import ManifestBuilder, write_manifest
from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.batch import max_event_time, run_view
from pipelines.sinks.parquet import ParquetSink
from pipelines.sinks.tables import changelog_schema, event_schema
from schemas.store import SchemaStore

KEYS = ["user_id", "seller_id", "stream_id"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One hour of traffic with many fraud rings, as a bounded run would leave it."""
    root = tmp_path_factory.mktemp("demo")
    options = GeneratorOptions(seed=3, duration_s=3600, shows=5, fraud_rings_per_hour=15)
    run = Generation(options)
    builder = ManifestBuilder(options)
    events: dict[str, list[dict[str, Any]]] = {t: [] for t in topics.REFERENCE_TOPICS}
    for rec in run.records():
        builder.observe(rec)
        if rec.record is not None:
            events[rec.topic].append(
                {**rec.record, "_partition": rec.partition, "_offset": rec.seq}
            )
    manifest = builder.build(run)
    write_manifest(root / "manifest.json", manifest)
    store = root / "offline"
    sink = ParquetSink(str(store))
    schemas = SchemaStore.load()
    for topic, rows in events.items():
        sink.time_columns[f"events/{topic}"] = (
            "updated_at" if topic == topics.USER_PROFILE else "event_time"
        )
        sink.write(f"events/{topic}", event_schema(schemas, topic), rows)
    horizon = max_event_time(PIPELINE, events)
    assert horizon is not None
    for name in ("user_features", "stream_features"):  # the views the reference rules read
        view = PIPELINE.view(name)
        rows = run_view(view, events, horizon).rows
        for r in rows:
            r["created_timestamp"] = r["event_timestamp"] + 1_000  # written a second later
        sink.write(f"features/{name}", changelog_schema(view), rows)
    return {"root": root, "store": str(store), "manifest": manifest, "events": events}


def test_labels_cover_every_accepted_order(demo: dict[str, Any]) -> None:
    manifest = demo["manifest"]
    table = labels_from_manifest(demo["store"], manifest)
    orders = demo["events"][topics.ORDER_PLACED]
    assert table.num_rows == len(orders) > 500
    charged = {c["order_id"] for c in manifest["chargebacks"]}
    assert {r["order_id"] for r in table.to_pylist() if r["label"]} == charged
    fraud = set(manifest["fraud_user_ids"])
    fraud_orders = [o for o in orders if o["user_id"] in fraud]
    assert len(fraud_orders) > 100
    # Noise both ways, as the generator documents: most fraud orders charged back, few honest.
    assert 0.8 < sum(o["order_id"] in charged for o in fraud_orders) / len(fraud_orders) < 1.0


def test_reference_rules_one_works_others_do_not(demo: dict[str, Any]) -> None:
    table = labels_from_manifest(demo["store"], demo["manifest"])
    labels = normalize_labels(table, KEYS, "demo labels")
    result = run_backtest(load_rules("marketplace_rules"), labels, demo["store"])
    by_rule = {m.rule: m for m in result.metrics}
    base_rate = labels.positives.mean()
    works = by_rule["new_account_payment_method_churn"]
    assert works.precision is not None and works.recall is not None
    assert works.precision > 0.8 and works.recall > 0.6
    tier = by_rule["high_risk_tier"]
    assert tier.tp == 0 and tier.alerts > 0  # raised after the fraud: never in time
    busy = by_rule["busy_stream"]
    assert busy.precision is not None and busy.precision < 1.5 * base_rate


def test_cli_labels_then_backtest(
    demo: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    made = runner.invoke(
        backtest,
        [
            "labels",
            "--manifest",
            str(demo["root"] / "manifest.json"),
            "--offline-store",
            demo["store"],
            "--out",
            "labels.csv",
        ],
        obj={},
    )
    assert made.exit_code == 0, made.output
    result = runner.invoke(
        backtest,
        [
            "marketplace_rules",
            "--labels",
            "labels.csv",
            "--offline-store",
            demo["store"],
            "--out",
            "out",
            "--as-known-at",
        ],
        obj={},
    )
    assert result.exit_code == 0, result.output
    assert "new_account_payment_method_churn" in result.output
    assert "as known at each event's time" in result.output
    rows = pq.read_table(tmp_path / "out" / "rows.parquet")
    assert rows.num_rows == len(demo["events"][topics.ORDER_PLACED])
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert document["as_known_at"] is True
    assert next(r["rule"] for r in document["rules_detail"]) == "new_account_payment_method_churn"
    # Rows written a second late: an order's own change is not known at its time.
    assert (tmp_path / "out" / "report.html").read_text().count("<svg") == 4


def test_read_orders_deduplicates_replays(demo: dict[str, Any], tmp_path: Path) -> None:
    orders = demo["events"][topics.ORDER_PLACED][:50]
    sink = ParquetSink(str(tmp_path), time_columns={f"events/{topics.ORDER_PLACED}": "event_time"})
    schema = event_schema(SchemaStore.load(), topics.ORDER_PLACED)
    sink.write(f"events/{topics.ORDER_PLACED}", schema, orders)
    sink.write(f"events/{topics.ORDER_PLACED}", schema, orders[:20])  # a replay
    got = read_orders(str(tmp_path))
    assert sorted(o["order_id"] for o in got) == sorted(o["order_id"] for o in orders)


def synthetic_orders(n: int, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    return [
        {
            "order_id": f"o{i}",
            "user_id": f"u{rnd.randrange(400)}",
            "seller_id": "s",
            "stream_id": "st",
            "event_time": 1_700_000_000_000 + i * 1000,
            "amount_cents": 100,
        }
        for i in range(n)
    ]


def test_simulated_labels_noise_and_determinism() -> None:
    orders = synthetic_orders(8_000, 1)
    fraud = {f"u{i}" for i in range(0, 400, 4)}  # a quarter of the users
    table = simulated_labels(orders, fraud, seed=9, miss_rate=0.2, honest_rate=0.05)
    rows = table.to_pylist()
    fraud_rows = [r for r in rows if r["user_id"] in fraud]
    honest_rows = [r for r in rows if r["user_id"] not in fraud]
    assert abs(sum(r["label"] for r in fraud_rows) / len(fraud_rows) - 0.8) < 0.03
    assert abs(sum(r["label"] for r in honest_rows) / len(honest_rows) - 0.05) < 0.01
    assert all((r["chargeback_time"] is not None) == r["label"] for r in rows)
    # Deterministic per seed and per order, whatever the order of the input.
    shuffled = list(reversed(orders))
    again = {
        r["order_id"]: r["label"]
        for r in simulated_labels(
            shuffled, fraud, seed=9, miss_rate=0.2, honest_rate=0.05
        ).to_pylist()
    }
    assert again == {r["order_id"]: r["label"] for r in rows}
    other = simulated_labels(orders, fraud, seed=10, miss_rate=0.2, honest_rate=0.05)
    assert other.column("label").to_pylist() != table.column("label").to_pylist()
    exact = simulated_labels(orders, fraud, seed=9, miss_rate=0.0, honest_rate=0.0)
    assert [r["label"] for r in exact.to_pylist()] == [o["user_id"] in fraud for o in orders]


def test_chargeback_labels_match_by_order_id() -> None:
    orders = synthetic_orders(5, 2)
    table = chargeback_labels(orders, [{"order_id": "o3", "chargeback_time_ms": 5}])
    assert table.column("label").to_pylist() == [False, False, False, True, False]
    assert table.column("chargeback_time").null_count == 4
