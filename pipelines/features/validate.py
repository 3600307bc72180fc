"""Validate a pipeline definition against the Avro schemas, without starting Flink.

Every problem names the pipeline, view and feature it is about and what to do.
:func:`problems` lists them all (``livefeat validate`` prints them);
:func:`check` raises :class:`~pipelines.errors.DefinitionError` on the first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from pipelines.errors import DefinitionError, SchemaError
from pipelines.features.definitions import (
    Aggregation,
    AsOf,
    ChangelogSource,
    EventSource,
    FieldAggregation,
    Mean,
    Pipeline,
    Share,
    Sum,
)
from schemas.store import SchemaStore

_NUMERIC = {"int", "long", "float", "double"}
_INTEGRAL = {"int", "long"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition."""

    where: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem} (fix: {self.fix})"


def field_types(schema: Any) -> dict[str, str]:
    """Top-level record field name -> base type ('long', 'string', 'enum', 'union', ...)."""
    out: dict[str, str] = {}
    for f in schema.get("fields", []) if isinstance(schema, dict) else []:
        t = f["type"]
        if isinstance(t, list):
            non_null = [x for x in t if x != "null"]
            t = non_null[0] if len(non_null) == 1 else "union"
        if isinstance(t, dict):
            t = t.get("type", "record")
        out[f["name"]] = str(t)
    return out


def _source_fields(
    store: SchemaStore, source: EventSource | ChangelogSource
) -> dict[str, str] | None:
    try:
        fields = field_types(store.latest(source.subject).schema)
    except SchemaError:
        return None
    if isinstance(source, EventSource):
        for enrichment in source.enrichments:
            cl = _source_fields(store, enrichment.changelog) or {}
            for name, attached in zip(enrichment.fields, enrichment.attached(), strict=True):
                fields[attached] = cl.get(name, "unknown")
    return fields


def problems(pipeline: Pipeline, store: SchemaStore | None = None) -> list[Problem]:
    """Every problem found in ``pipeline`` (empty when it is valid)."""
    store = store or SchemaStore.load()
    found: list[Problem] = []
    at = f"pipeline {pipeline.name}"

    def add(where: str, problem: str, fix: str) -> None:
        found.append(Problem(where, problem, fix))

    for name, n in Counter(v.name for v in pipeline.views).items():
        if n > 1:
            add(at, f"view name {name!r} is used {n} times", "give each view its own name")
    all_features = Counter(f.name for v in pipeline.views for f in v.features)
    for name, n in all_features.items():
        if n > 1:
            add(at, f"feature name {name!r} is used {n} times", "feature names must be unique")

    sources = {s.name: s for s in pipeline.event_sources} | {c.name: c for c in pipeline.changelogs}
    schema_fields: dict[str, dict[str, str]] = {}
    for src in sources.values():
        fields = _source_fields(store, src)
        if fields is None:
            add(
                f"{at}, source {src.name}",
                f"no schema for topic {src.topic!r}",
                f"add schemas/avro/{src.topic}/v1.avsc or fix the topic name",
            )
            continue
        schema_fields[src.name] = fields
        needed = [src.timestamp_field] + ([src.id_field] if isinstance(src, EventSource) else [])
        if isinstance(src, ChangelogSource):
            needed.append(src.key_field)
        for f in needed:
            if f not in fields:
                add(
                    f"{at}, source {src.name}",
                    f"field {f!r} not in schema of {src.topic}",
                    f"use one of {sorted(fields)}",
                )
        if isinstance(src, EventSource):
            for e in src.enrichments:
                if e.on not in fields:
                    add(
                        f"{at}, source {src.name}",
                        f"enrichment key {e.on!r} not in {src.topic}",
                        f"use one of {sorted(fields)}",
                    )
                cl_fields = _source_fields(store, e.changelog) or {}
                for f in e.fields:
                    if f not in cl_fields:
                        add(
                            f"{at}, source {src.name}",
                            f"enrichment field {f!r} not in {e.changelog.topic}",
                            f"use one of {sorted(cl_fields)}",
                        )

    for view in pipeline.views:
        for feature in view.features:
            where = f"{at}, view {view.name}, feature {feature.name}"
            comp = feature.compute
            if isinstance(comp, AsOf):
                fields = schema_fields.get(comp.changelog.name)
                if fields is not None and comp.field not in fields:
                    add(
                        where,
                        f"field {comp.field!r} not in {comp.changelog.topic}",
                        f"use one of {sorted(fields)}",
                    )
                continue
            _check_aggregation(
                view.key_field_for(comp.source.name),
                comp,
                schema_fields.get(comp.source.name),
                where,
                add,
            )
    return found


def _check_aggregation(
    key_field: str, agg: Aggregation, fields: dict[str, str] | None, where: str, add: Any
) -> None:
    if agg.window_ms <= 0:
        add(where, f"window length {agg.window_ms} ms is not positive", "use e.g. minutes(5)")
    if fields is None:
        return
    if key_field not in fields:
        add(
            where,
            f"entity key {key_field!r} not in {agg.source.topic}",
            "set the view's key_fields for this source or pick another source",
        )
    if isinstance(agg, FieldAggregation):
        if not agg.field:
            add(where, f"{agg.kind} needs a field", "pass field=...")
        elif agg.field not in fields:
            add(
                where,
                f"field {agg.field!r} not in {agg.source.topic}",
                f"use one of {sorted(fields)}",
            )
        elif isinstance(agg, Sum) and fields[agg.field] not in _INTEGRAL:
            add(
                where,
                f"sum of {agg.field!r} ({fields[agg.field]}) would not be exact",
                "sum int or long fields (money is amount_cents: long)",
            )
        elif isinstance(agg, Mean) and fields[agg.field] not in _NUMERIC:
            add(
                where,
                f"mean of non-numeric field {agg.field!r} ({fields[agg.field]})",
                "use a numeric field",
            )
    predicates = [p for p in (agg.where, agg.numerator if isinstance(agg, Share) else None) if p]
    if isinstance(agg, Share) and agg.numerator is None:
        add(where, "share needs a numerator predicate", "pass numerator=col(...) ...")
    for pred in predicates:
        for f in sorted(pred.fields() - set(fields)):
            add(where, f"predicate reads unknown field {f!r}", f"use one of {sorted(fields)}")


def check(pipeline: Pipeline, store: SchemaStore | None = None) -> None:
    """Raise :class:`DefinitionError` describing the first problem, if any."""
    found = problems(pipeline, store)
    if found:
        first = found[0]
        more = f" ({len(found) - 1} more; run `livefeat validate`)" if len(found) > 1 else ""
        raise DefinitionError(first.problem + more, where=first.where, fix=first.fix)
