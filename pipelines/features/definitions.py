"""The feature-definition API: entities, sources, aggregations, feature views.

A pipeline is declared once with these frozen dataclasses and compiled into
two runtimes: the streaming PyFlink job (:mod:`pipelines.runtime.flink_job`)
and the batch backfill (:mod:`pipelines.runtime.batch`). Both drive the same
per-entity state machine (:mod:`pipelines.features.engine`).

Window semantics (see docs/semantics.md): the value of a windowed feature for
an entity *as of* time ``t`` aggregates the entity's accepted events with event
time ``e`` in ``t - L < e <= t``. Counts and sums of an empty window are 0;
means and ratios are null.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipelines.features.expr import Expr

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

ValueType = Literal["int64", "float64", "bool", "string", "timestamp"]


def minutes(n: int) -> int:
    """``n`` minutes as a window length in milliseconds."""
    return n * MINUTE_MS


def hours(n: int) -> int:
    """``n`` hours as a window length in milliseconds."""
    return n * HOUR_MS


@dataclass(frozen=True)
class Entity:
    """What features describe, identified by one string key (e.g. ``user_id``)."""

    name: str
    join_key: str
    description: str = ""


@dataclass(frozen=True)
class ChangelogSource:
    """A compacted topic of entity versions (e.g. user profiles), joined as of event time.

    The version in force at time ``t`` is the one with the largest
    ``timestamp_field`` <= ``t`` (ties: the later Kafka offset wins).
    """

    name: str
    topic: str
    key_field: str
    timestamp_field: str = "updated_at"
    offline_dataset: str = ""

    @property
    def subject(self) -> str:
        """Schema subject of the topic's records."""
        return self.topic

    @property
    def dataset(self) -> str:
        """Offline dataset name (defaults to the topic)."""
        return self.offline_dataset or self.topic


@dataclass(frozen=True)
class Enrichment:
    """Attach fields of the changelog version in force at each event's time.

    The event field ``on`` is matched with the changelog's key; each attached
    field ``f`` appears on the event as ``prefix + f`` (null before the key's
    first version).
    """

    changelog: ChangelogSource
    on: str
    fields: tuple[str, ...]
    prefix: str = ""

    def attached(self) -> tuple[str, ...]:
        """Names of the fields added to the event."""
        return tuple(self.prefix + f for f in self.fields)


@dataclass(frozen=True)
class EventSource:
    """An append-only event stream: a Kafka topic plus its offline event log.

    Attributes:
        name: short name used in step names and errors (``bids``).
        topic: the Kafka topic; its schema subject has the same name.
        offline_dataset: dataset name of the accepted-event log in the offline store.
        timestamp_field: event-time field (epoch ms); equal to the Kafka record timestamp.
        id_field: unique event id (used to deduplicate replays).
        enrichments: as-of joins applied to each event before aggregation.
    """

    name: str
    topic: str
    offline_dataset: str = ""
    timestamp_field: str = "event_time"
    id_field: str = "event_id"
    enrichments: tuple[Enrichment, ...] = ()

    def fields_added(self) -> tuple[str, ...]:
        """Fields the enrichments add to each event."""
        return tuple(f for e in self.enrichments for f in e.attached())

    @property
    def subject(self) -> str:
        """Schema subject of the topic's records."""
        return self.topic

    @property
    def dataset(self) -> str:
        """Offline dataset name (defaults to the topic)."""
        return self.offline_dataset or self.topic


@dataclass(frozen=True)
class Aggregation:
    """Base of the windowed aggregations. ``window_ms`` is the window length L."""

    source: EventSource
    window_ms: int
    where: Expr | None = None

    kind = "aggregation"
    value_type: ValueType = "int64"

    @property
    def input_field(self) -> str | None:
        """The event field aggregated (None for counts)."""
        return None


@dataclass(frozen=True)
class Count(Aggregation):
    """Number of events in the window (0 when empty)."""

    kind = "count"


@dataclass(frozen=True)
class FieldAggregation(Aggregation):
    """Base of the aggregations over one event field (``field``)."""

    field: str = ""

    @property
    def input_field(self) -> str | None:
        return self.field


@dataclass(frozen=True)
class Sum(FieldAggregation):
    """Sum of an integer field over the window (0 when empty)."""

    kind = "sum"


@dataclass(frozen=True)
class Mean(FieldAggregation):
    """Mean of a numeric field over the window (null when empty)."""

    kind = "mean"
    value_type: ValueType = "float64"


@dataclass(frozen=True)
class CountDistinct(FieldAggregation):
    """Exact number of distinct values of a field over the window (0 when empty)."""

    kind = "count_distinct"


@dataclass(frozen=True)
class Share(Aggregation):
    """Share of the window's events for which ``numerator`` holds (null when empty).

    Events where ``numerator`` is null count in the denominator only.
    """

    numerator: Expr | None = None
    kind = "share"
    value_type: ValueType = "float64"


@dataclass(frozen=True)
class AsOf:
    """A field of the changelog version in force, for the view's own entity."""

    changelog: ChangelogSource
    field: str
    value_type: ValueType = "string"
    kind = "as_of"


@dataclass(frozen=True)
class Feature:
    """A named feature computed by an aggregation or an as-of lookup."""

    name: str
    compute: Aggregation | AsOf
    description: str = ""

    @property
    def value_type(self) -> ValueType:
        """Type of the stored value."""
        return self.compute.value_type


@dataclass(frozen=True)
class FeatureView:
    """Features of one entity, materialized together as one changelog.

    Every aggregation's source record must carry the entity's join key, unless
    the view names another field per source in ``key_fields`` (source name ->
    field).
    """

    name: str
    entity: Entity
    features: tuple[Feature, ...]
    description: str = ""
    key_fields: tuple[tuple[str, str], ...] = ()

    def key_field_for(self, source_name: str) -> str:
        """The record field holding this view's entity key in a source's events."""
        return dict(self.key_fields).get(source_name, self.entity.join_key)

    @property
    def aggregations(self) -> list[tuple[Feature, Aggregation]]:
        """The windowed features, in declaration order."""
        return [(f, f.compute) for f in self.features if isinstance(f.compute, Aggregation)]

    @property
    def lookups(self) -> list[tuple[Feature, AsOf]]:
        """The as-of features, in declaration order."""
        return [(f, f.compute) for f in self.features if isinstance(f.compute, AsOf)]

    @property
    def event_sources(self) -> list[EventSource]:
        """Distinct event sources the view aggregates, in first-use order."""
        seen: dict[str, EventSource] = {}
        for _, agg in self.aggregations:
            seen.setdefault(agg.source.name, agg.source)
        return list(seen.values())

    @property
    def changelogs(self) -> list[ChangelogSource]:
        """Distinct changelog sources of the view's as-of features."""
        seen: dict[str, ChangelogSource] = {}
        for _, look in self.lookups:
            seen.setdefault(look.changelog.name, look.changelog)
        return list(seen.values())

    @property
    def feature_names(self) -> list[str]:
        """Feature names, in declaration order."""
        return [f.name for f in self.features]


@dataclass(frozen=True)
class Pipeline:
    """A named set of feature views over a set of sources."""

    name: str
    views: tuple[FeatureView, ...]
    description: str = ""
    read_time_features: tuple[tuple[str, str, str], ...] = field(default=())
    """Features computed at read time, not stored: (view, name, stored feature it derives from)."""

    def view(self, name: str) -> FeatureView:
        """The view called ``name``."""
        for v in self.views:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def event_sources(self) -> list[EventSource]:
        """Every event source any view reads, in first-use order."""
        seen: dict[str, EventSource] = {}
        for v in self.views:
            for s in v.event_sources:
                seen.setdefault(s.name, s)
        return list(seen.values())

    @property
    def changelogs(self) -> list[ChangelogSource]:
        """Every changelog source, from lookups and enrichments."""
        seen: dict[str, ChangelogSource] = {}
        for v in self.views:
            for c in v.changelogs:
                seen.setdefault(c.name, c)
            for src in v.event_sources:
                for e in src.enrichments:
                    seen.setdefault(e.changelog.name, e.changelog)
        return list(seen.values())
