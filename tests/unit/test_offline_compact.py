"""Compaction of the offline store: fewer files, same rows, safe for readers running meanwhile."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipelines.jobs.marketplace import PIPELINE
from pipelines.offline import compact, dataset_stats, list_datasets, read_changelog
from pipelines.runtime.batch import max_event_time
from pipelines.sinks.parquet import ParquetSink
from pipelines.sinks.tables import changelog_schema
from tests.reference import HOUR
from tests.unit.test_features_exact import T0, random_events
from tests.unit.test_offline_changelog import write_changelogs


def _files(root: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for f in sorted(root.rglob("*.parquet")):
        if not f.name.startswith("."):
            out.setdefault(str(f.parent.relative_to(root)), []).append(f)
    return out


def _store(tmp_path: Path, chunk: int = 40) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    events = random_events(21)
    horizon = max_event_time(PIPELINE, events)
    assert horizon is not None
    uri = str(tmp_path / "offline")
    rows = write_changelogs(uri, events, horizon, created=T0 + 10 * HOUR, chunk=chunk)
    return uri, rows


def test_compaction_leaves_one_file_per_partition_and_the_same_rows(tmp_path: Path) -> None:
    uri, rows = _store(tmp_path)
    dataset = Path(uri) / "features" / "user_features"
    before = _files(dataset)
    assert max(len(v) for v in before.values()) > 3
    # a replayed file (an exact copy) and a late writer's duplicates with a later created time
    first = next(iter(before.values()))[0]
    shutil.copy(first, first.with_name("part-9-000001-replayed.parquet"))
    replay = [{**r, "created_timestamp": T0 + 30 * HOUR} for r in rows["user_features"][:50]]
    ParquetSink(uri, writer_id="late").write(
        "features/user_features", changelog_schema(PIPELINE.view("user_features")), replay
    )
    want = read_changelog(uri, "user_features")
    raw_rows = read_changelog(uri, "user_features", dedupe=False).num_rows

    result = compact(uri, "features/user_features")

    after = _files(dataset)
    assert set(after) == set(before)
    assert all(len(v) == 1 for v in after.values())
    assert result.files_after == len(after)
    assert result.rows_before == raw_rows
    assert result.rows_after == len(rows["user_features"])  # duplicates merged away
    assert read_changelog(uri, "user_features", dedupe=False).equals(want)
    assert read_changelog(uri, "user_features").equals(want)
    # again: nothing to do
    again = compact(uri, "features/user_features")
    assert (again.partitions, again.files_before, again.files_after) == (0, len(after), len(after))


def test_event_logs_are_deduplicated_on_kafka_position(tmp_path: Path) -> None:
    import pyarrow as pa

    schema = pa.schema([("event_id", pa.string()), ("event_time", pa.timestamp("ms", tz="UTC")),
                        ("_partition", pa.int32()), ("_offset", pa.int64())])
    rows = [{"event_id": f"e{i}", "event_time": T0 + i, "_partition": i % 2, "_offset": i}
            for i in range(30)]
    sink = ParquetSink(str(tmp_path), time_columns={"events/t": "event_time"})
    sink.write("events/t", schema, rows[:20])
    sink.write("events/t", schema, rows[10:])  # a replay overlapping the first batch
    result = compact(str(tmp_path), "events/t")
    assert (result.rows_before, result.rows_after) == (40, 30)
    table = pq.read_table(next(iter(_files(tmp_path / "events" / "t").values()))[0])
    assert sorted(table.column("_offset").to_pylist()) == list(range(30))


def test_readers_during_compaction_see_every_row(tmp_path: Path) -> None:
    uri, rows = _store(tmp_path, chunk=7)  # many small files
    want = read_changelog(uri, "stream_features")
    mismatches: list[int] = []
    reads = [0]
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            got = read_changelog(uri, "stream_features")
            reads[0] += 1
            if not got.equals(want):
                mismatches.append(got.num_rows)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(3):
            compact(uri, "features/stream_features")
            ParquetSink(uri, writer_id="again").write(  # new small files to compact again
                "features/stream_features",
                changelog_schema(PIPELINE.view("stream_features")),
                rows["stream_features"][:40],
            )
    finally:
        done.set()
        thread.join()
    assert reads[0] > 0
    assert mismatches == []


def test_stats_count_files_rows_and_duplicates(tmp_path: Path) -> None:
    uri, rows = _store(tmp_path)
    assert list_datasets(uri) == [f"features/{v.name}" for v in
                                  sorted(PIPELINE.views, key=lambda v: v.name)]
    stats = dataset_stats(uri, "features/seller_features", duplicates=True)
    files = [f for fs in _files(Path(uri) / "features" / "seller_features").values() for f in fs]
    assert stats.files == len(files)
    assert stats.bytes == sum(f.stat().st_size for f in files)
    assert stats.rows == len(rows["seller_features"])
    assert stats.duplicates == 0
    assert stats.first_partition.startswith("date=")
