"""Batch runtime: evaluate a pipeline over recorded accepted events.

Used by ``livefeat backfill`` to rebuild history after a definition change,
and by the parity test that holds the streaming runtime to the same output.
It drives the same per-entity engine as the streaming job, visiting each
entity's change points (event times, changelog version times and window
expirations) in increasing order up to the horizon (the final watermark).

Input records are dicts with the schema's fields (times in epoch ms) plus
``_partition`` and ``_offset`` (Kafka position), which order changelog
versions that take effect in the same millisecond.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.features.definitions import EventSource, FeatureView, Pipeline
from pipelines.features.engine import Enricher, Record, ViewEngine

# Order of kinds at the same timestamp: versions take effect before events read them.
_VERSION, _EVENT = 0, 1


@dataclass
class ChangelogRows:
    """Changelog of one view: entity key, event_timestamp, created_timestamp, values."""

    view: FeatureView
    rows: list[dict[str, Any]] = field(default_factory=list)


def _position(record: Record) -> tuple[int, int]:
    return (int(record.get("_partition", 0)), int(record.get("_offset", 0)))


def enrich_source(
    source: EventSource, events: Iterable[Record], versions_by_topic: Mapping[str, list[Record]]
) -> list[Record]:
    """Events of ``source`` with each enrichment's fields as of the event time."""
    out = list(events)
    for enrichment in source.enrichments:
        cl = enrichment.changelog
        enricher = Enricher(enrichment.fields, enrichment.prefix)
        timeline: dict[Any, list[tuple[int, int, tuple[int, int], int, Record]]] = defaultdict(list)
        for v in versions_by_topic.get(cl.topic, []):
            timeline[v[cl.key_field]].append((v[cl.timestamp_field], _VERSION, _position(v), 0, v))
        for i, e in enumerate(out):
            timeline[e[enrichment.on]].append((e[source.timestamp_field], _EVENT, (0, 0), i, e))
        enriched: list[Record | None] = [None] * len(out)
        for items in timeline.values():
            items.sort(key=lambda x: (x[0], x[1], x[2], x[3]))
            current: Record | None = None
            for _, kind, _, i, rec in items:
                if kind == _VERSION:
                    current = enricher.apply_version(current, rec)
                else:
                    enriched[i] = enricher.enrich(current, rec)
        out = [r for r in enriched if r is not None]
    return out


def run_view(
    view: FeatureView,
    events_by_topic: Mapping[str, list[Record]],
    horizon_ms: int,
    created_ms: int | None = None,
) -> ChangelogRows:
    """The changelog of one view over the given accepted events, up to ``horizon_ms``."""
    engine = ViewEngine(view)
    created = created_ms if created_ms is not None else int(time.time() * 1000)
    key_name = view.entity.join_key
    # entity -> time -> (versions, events)
    timeline: dict[
        Any, dict[int, tuple[list[tuple[tuple[int, int], str, Record]], list[tuple[str, Record]]]]
    ] = defaultdict(dict)

    def slot(key: Any, t: int) -> tuple[list[Any], list[Any]]:
        per_key = timeline[key]
        if t not in per_key:
            per_key[t] = ([], [])
        return per_key[t]

    for source in view.event_sources:
        key_field = view.key_field_for(source.name)
        for rec in enrich_source(source, events_by_topic.get(source.topic, []), events_by_topic):
            slot(rec[key_field], rec[source.timestamp_field])[1].append((source.name, rec))
    for cl in view.changelogs:
        for rec in events_by_topic.get(cl.topic, []):
            slot(rec[cl.key_field], rec[cl.timestamp_field])[0].append(
                (_position(rec), cl.name, rec)
            )

    out = ChangelogRows(view)

    def emit(key: Any, t: int, values: tuple[Any, ...] | None) -> None:
        if values is not None:
            row = {key_name: key, "event_timestamp": t, "created_timestamp": created}
            row.update(zip(engine.feature_names, values, strict=True))
            out.rows.append(row)

    for key in sorted(timeline, key=str):
        state = engine.new_state()
        per_key = timeline[key]
        for t in sorted(per_key):
            if t > horizon_ms:
                break
            while (x := engine.next_expiration(state)) is not None and x < t:
                emit(key, x, engine.step(state, x))
            versions, events = per_key[t]
            versions.sort(key=lambda v: v[0])
            emit(key, t, engine.step(state, t, events, [(name, r) for _, name, r in versions]))
        while (x := engine.next_expiration(state)) is not None and x <= horizon_ms:
            emit(key, x, engine.step(state, x))
    return out


def max_event_time(pipeline: Pipeline, events_by_topic: Mapping[str, list[Record]]) -> int | None:
    """Largest event time among the pipeline's inputs (None when there are none)."""
    times = [
        r[s.timestamp_field]
        for s in pipeline.event_sources
        for r in events_by_topic.get(s.topic, [])
    ]
    times += [
        r[c.timestamp_field] for c in pipeline.changelogs for r in events_by_topic.get(c.topic, [])
    ]
    return max(times) if times else None


def run_pipeline(
    pipeline: Pipeline,
    events_by_topic: Mapping[str, list[Record]],
    horizon_ms: int | None = None,
    created_ms: int | None = None,
) -> dict[str, ChangelogRows]:
    """Changelogs of every view of ``pipeline``.

    Args:
        pipeline: the definitions.
        events_by_topic: accepted records per topic (events and changelog versions).
        horizon_ms: final watermark; rows after it are not produced. Default:
            the largest event time in the input.
        created_ms: created_timestamp to stamp on rows (default: now).
    """
    if horizon_ms is None:
        horizon_ms = max_event_time(pipeline, events_by_topic)
        if horizon_ms is None:
            return {v.name: ChangelogRows(v) for v in pipeline.views}
    return {v.name: run_view(v, events_by_topic, horizon_ms, created_ms) for v in pipeline.views}
