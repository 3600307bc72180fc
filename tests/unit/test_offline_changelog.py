"""Reading changelogs back from Parquet: deduplication, as-of lookups, known-at, against SQL."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from pipelines.config import OfflineStoreSettings, Settings
from pipelines.jobs.marketplace import PIPELINE
from pipelines.offline import as_of, read_changelog
from pipelines.runtime.batch import max_event_time, run_pipeline
from pipelines.sinks.parquet import ParquetSink
from pipelines.sinks.tables import changelog_schema
from tests.reference import HOUR, MIN, Reference
from tests.unit.test_features_exact import T0, random_events

VIEWS = ["user_features", "seller_features", "stream_features"]


def write_changelogs(uri: str, events: dict[str, list[dict[str, Any]]], horizon: int,
                     *, created: int, chunk: int = 113, writer: str = "0",
                     delay_ms: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run the batch runtime and write each view's changelog in several files; returns rows.

    With ``delay_ms``, each row's created_timestamp is its event_timestamp + delay_ms.
    """
    out = run_pipeline(PIPELINE, events, horizon, created_ms=created)
    sink = ParquetSink(uri, writer_id=writer)
    rows_by_view = {}
    for name, changelog in out.items():
        rows = changelog.rows
        if delay_ms is not None:
            rows = [{**r, "created_timestamp": r["event_timestamp"] + delay_ms} for r in rows]
        schema = changelog_schema(changelog.view)
        for i in range(0, len(rows), chunk):
            sink.write(f"features/{name}", schema, rows[i:i + chunk])
        rows_by_view[name] = rows
    return rows_by_view


def _as_dicts(table: Any) -> list[dict[str, Any]]:
    for name in ("event_timestamp", "created_timestamp", "user_account_created_at"):
        if name in table.schema.names:
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, pc.cast(table.column(i), "int64"))
    return table.to_pylist()


@pytest.mark.parametrize("view", VIEWS)
def test_replayed_rows_are_read_once_with_the_earliest_created_timestamp(
    tmp_path: Path, view: str
) -> None:
    events = random_events(11)
    horizon = max_event_time(PIPELINE, events)
    assert horizon is not None
    uri = str(tmp_path / "offline")
    first = write_changelogs(uri, events, horizon, created=T0 + 10 * HOUR)
    # a restart replays the second half again, written later by another writer
    replay = first[view][len(first[view]) // 2:]
    later = [{**r, "created_timestamp": T0 + 20 * HOUR} for r in replay]
    ParquetSink(uri, writer_id="1").write(
        f"features/{view}", changelog_schema(PIPELINE.view(view)), later
    )
    raw = read_changelog(uri, view, dedupe=False)
    assert raw.num_rows == len(first[view]) + len(replay)
    got = _as_dicts(read_changelog(uri, view))
    key = PIPELINE.view(view).entity.join_key
    want = sorted(first[view], key=lambda r: (r[key], r["event_timestamp"]))
    assert got == want
    assert {r["created_timestamp"] for r in got} == {T0 + 10 * HOUR}


def test_settings_and_missing_dataset(tmp_path: Path) -> None:
    settings = Settings(offline_store=OfflineStoreSettings(uri=str(tmp_path / "nothing")))
    empty = read_changelog(settings, "user_features")
    assert empty.num_rows == 0
    assert empty.schema == changelog_schema(PIPELINE.view("user_features"))


@pytest.mark.parametrize("view", VIEWS)
def test_as_of_equals_sql_reference_at_sampled_points(tmp_path: Path, view: str) -> None:
    events = random_events(12)
    horizon = max_event_time(PIPELINE, events)
    assert horizon is not None
    uri = str(tmp_path / "offline")
    rows = write_changelogs(uri, events, horizon, created=T0 + 10 * HOUR)[view]
    key = PIPELINE.view(view).entity.join_key
    keys = [*sorted({r[key] for r in rows}), "never-seen"]
    rnd = random.Random(4)
    points = [(rnd.choice(keys), T0 - 30 * MIN + rnd.randrange(0, horizon - T0 + 30 * MIN))
              for _ in range(300)]
    points += [(r[key], r["event_timestamp"] + d) for r in rows[::5] for d in (-1, 0, 1)]
    points = [(k, t) for k, t in points if t <= horizon]
    got = as_of(read_changelog(uri, view), view, points)
    ref = Reference(events)
    names = ref.feature_names(view)
    want = {(r[key], r["event_timestamp"]): r for r in ref.as_of(view, points)}
    assert len(got) == len(points)
    for (k, t), row in zip(points, got, strict=True):
        assert (row[key], row["event_timestamp"]) == (k, t)
        assert [row[n] for n in names] == [want[(k, t)][n] for n in names], (k, t)


def test_known_at_sees_only_rows_already_written(tmp_path: Path) -> None:
    events = random_events(13)
    horizon = max_event_time(PIPELINE, events)
    assert horizon is not None
    uri = str(tmp_path / "offline")
    delay = 90_000  # every row written 90 s after its event time
    rows = write_changelogs(uri, events, horizon, created=0, delay_ms=delay)["user_features"]
    keys = sorted({r["user_id"] for r in rows})
    rnd = random.Random(5)
    points = [(rnd.choice(keys), T0 + rnd.randrange(delay, horizon - T0)) for _ in range(200)]
    got = as_of(read_changelog(uri, "user_features"), "user_features", points, known_at=True)
    # known at t = the value as of t - delay (independent: the SQL reference)
    ref = Reference(events)
    names = ref.feature_names("user_features")
    want = ref.as_of("user_features", [(k, t - delay) for k, t in points])
    lookup = {(r["user_id"], r["event_timestamp"]): r for r in want}
    for (k, t), row in zip(points, got, strict=True):
        assert [row[n] for n in names] == [lookup[(k, t - delay)][n] for n in names], (k, t)
