"""``livefeat backfill``: recompute changelogs from the accepted-event log, in batch.

Reads ``events/<topic>`` from the offline store (with one extra longest-window of
history before ``--from`` so windows start warm), runs the batch runtime, and
writes the rows with ``from <= event_timestamp <= to`` to the output location's
``features/<view>`` (default: the offline store itself).

Rows for the same entity and ``event_timestamp`` that the streaming job already
wrote are identical when the definitions are unchanged, so readers deduplicate
them. After a definition *change*, write to a fresh location (``--output``) and
point readers there: old and new rows for one timestamp would otherwise both
exist, and readers keep the earliest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow.compute as pc

from pipelines.features.definitions import Pipeline
from pipelines.runtime import batch
from pipelines.sinks.parquet import ParquetSink, read_dataset
from pipelines.sinks.tables import changelog_schema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackfillResult:
    """What a backfill produced."""

    events_read: dict[str, int]
    rows_written: dict[str, int]
    from_ms: int
    to_ms: int


def load_events(
    uri: str,
    pipeline: Pipeline,
    from_ms: int | None,
    to_ms: int | None,
    s3_options: dict[str, Any] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Accepted events per topic with event time in ``[from_ms, to_ms]`` (None: unbounded),
    as dicts with epoch-ms times, deduplicated on Kafka position."""
    out: dict[str, list[dict[str, Any]]] = {}
    sources = [(s.topic, s.timestamp_field) for s in pipeline.event_sources]
    sources += [(c.topic, c.timestamp_field) for c in pipeline.changelogs]
    for topic, time_field in dict(sources).items():
        try:
            table = read_dataset(uri, f"events/{topic}", s3_options)
        except FileNotFoundError:
            out[topic] = []
            continue
        ts = pc.cast(table.column(time_field), "int64")
        if from_ms is not None:
            table, ts = table.filter(pc.greater_equal(ts, from_ms)), None
        if to_ms is not None:
            ts = pc.cast(table.column(time_field), "int64")
            table = table.filter(pc.less_equal(ts, to_ms))
        for name in table.schema.names:
            if str(table.schema.field(name).type).startswith("timestamp"):
                table = table.set_column(
                    table.schema.get_field_index(name), name, pc.cast(table.column(name), "int64")
                )
        seen: set[tuple[int, int]] = set()
        rows = []
        for row in table.to_pylist():
            pos = (row["_partition"], row["_offset"])
            if pos not in seen:
                seen.add(pos)
                rows.append(row)
        out[topic] = rows
    return out


def backfill(
    pipeline: Pipeline,
    uri: str,
    from_ms: int | None,
    to_ms: int | None,
    output_uri: str | None = None,
    *,
    s3_options: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BackfillResult:
    """Recompute the changelogs of ``pipeline`` for ``[from_ms, to_ms]``; see module doc."""
    say = progress or log.info
    longest = max((agg.window_ms for v in pipeline.views for _, agg in v.aggregations), default=0)
    # Profiles (changelog sources) are needed from the beginning: a version set long ago
    # may still be in force. Events need only one longest window of history.
    events = load_events(
        uri, pipeline, None if from_ms is None else from_ms - longest, to_ms, s3_options
    )
    for cl in pipeline.changelogs:
        events[cl.topic] = load_events(uri, pipeline, None, to_ms, s3_options)[cl.topic]
    read = {t: len(v) for t, v in events.items()}
    say(f"read {sum(read.values()):,} accepted events from {uri}")
    horizon = to_ms if to_ms is not None else batch.max_event_time(pipeline, events)
    if horizon is None:
        return BackfillResult(read, {}, from_ms or 0, 0)
    start = from_ms if from_ms is not None else -(2**62)
    sink = ParquetSink(output_uri or uri, writer_id="backfill", s3_options=s3_options)
    written: dict[str, int] = {}
    for view in pipeline.views:
        rows = batch.run_view(view, events, horizon).rows
        rows = [r for r in rows if r["event_timestamp"] >= start]
        written[view.name] = sink.write(f"features/{view.name}", changelog_schema(view), rows)
        say(f"{view.name}: {written[view.name]:,} changelog rows")
    return BackfillResult(read, written, start, horizon)
