"""Backfill over a Parquet accepted-event log equals the SQL reference (after the round trip)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.backfill import backfill
from pipelines.runtime.batch import max_event_time
from pipelines.sinks.parquet import ParquetSink, read_dataset
from pipelines.sinks.tables import event_schema
from schemas.store import SchemaStore
from tests.reference import Reference
from tests.unit.test_features_exact import random_events


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, list[dict]]]:
    root = tmp_path_factory.mktemp("offline")
    events = random_events(11)
    store = SchemaStore.load()
    sink = ParquetSink(str(root), time_columns={})
    for topic, rows in events.items():
        field = "updated_at" if topic == "users.profile" else "event_time"
        sink.time_columns[f"events/{topic}"] = field
        positioned = [
            {**r, "_partition": r.get("_partition", 0), "_offset": r.get("_offset", i)}
            for i, r in enumerate(rows)
        ]
        events[topic] = positioned
        half = len(positioned) // 2  # two files, and a replayed duplicate of the first half
        sink.write(f"events/{topic}", event_schema(store, topic), positioned[:half])
        sink.write(f"events/{topic}", event_schema(store, topic), positioned[half:])
        sink.write(f"events/{topic}", event_schema(store, topic), positioned[:half])
    return str(root), events


@pytest.mark.parametrize("view", ["user_features", "seller_features", "stream_features"])
def test_backfill_changelog_equals_reference(
    offline: tuple[str, dict], view: str, tmp_path: Path
) -> None:
    uri, events = offline
    result = backfill(PIPELINE, uri, None, None, output_uri=str(tmp_path))
    horizon = max_event_time(PIPELINE, events)
    assert horizon is not None and result.to_ms == horizon
    assert result.events_read == {t: len(v) for t, v in events.items() if v}
    table = read_dataset(str(tmp_path), f"features/{view}")
    for name in ("event_timestamp", "created_timestamp", "user_account_created_at"):
        if name in table.schema.names:
            table = table.set_column(
                table.schema.get_field_index(name), name, pc.cast(table.column(name), "int64")
            )
    ref = Reference(events)
    key = PIPELINE.view(view).entity.join_key
    names = ref.feature_names(view)
    got = sorted((r[key], r["event_timestamp"], *(r[n] for n in names)) for r in table.to_pylist())
    want = [
        (r[key], r["event_timestamp"], *(r[n] for n in names)) for r in ref.changelog(view, horizon)
    ]
    assert got == want
