"""Routing plan: which accepted record goes to which keyed step, under which key.

Compiled once from a :class:`~pipelines.features.definitions.Pipeline`. The
streaming job has two keyed steps:

* ``enrich`` (keyed by the changelog key, e.g. ``user_id``): as-of joins for
  sources that declare enrichments; it emits enriched events to ``views``;
* ``views`` (keyed by ``"<view>|<entity key>"``): the windows of every view.

A record fans out to every target that reads its topic. Keys are strings so
one keyed step can hold every view.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from pipelines.features.definitions import ChangelogSource, EventSource, Pipeline

EVENT = "event"
VERSION = "version"


@dataclass(frozen=True)
class ViewTarget:
    """Send records of a topic to one view, as events of ``source`` or versions of ``changelog``."""

    view: str
    kind: str  # EVENT or VERSION
    name: str  # source or changelog name
    key_field: str
    enriched: bool  # events of this source come out of the enrich step, not straight from decode


@dataclass(frozen=True)
class EnrichTarget:
    """Send records of a topic to the enrich step for ``source``."""

    source: str
    kind: str  # EVENT or VERSION
    key_field: str


def view_key(view: str, entity_key: Any) -> str:
    """Key of the views step."""
    return f"{view}|{entity_key}"


def split_view_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`view_key`."""
    view, _, entity = key.partition("|")
    return view, entity


class RoutingPlan:
    """Targets per topic, computed once."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.to_views: dict[str, list[ViewTarget]] = defaultdict(list)
        self.to_enrich: dict[str, list[EnrichTarget]] = defaultdict(list)
        self.enriched_sources: dict[str, EventSource] = {}
        for view in pipeline.views:
            for src in view.event_sources:
                enriched = bool(src.enrichments)
                if enriched:
                    self.enriched_sources[src.name] = src
                self.to_views[src.topic].append(
                    ViewTarget(view.name, EVENT, src.name, view.key_field_for(src.name), enriched)
                )
            for cl in view.changelogs:
                self.to_views[cl.topic].append(
                    ViewTarget(view.name, VERSION, cl.name, cl.key_field, False)
                )
        for src in self.enriched_sources.values():
            if len(src.enrichments) != 1:
                raise NotImplementedError(
                    f"source {src.name}: one enrichment per source is supported"
                )
            enrichment = src.enrichments[0]
            self.to_enrich[src.topic].append(EnrichTarget(src.name, EVENT, enrichment.on))
            self.to_enrich[enrichment.changelog.topic].append(
                EnrichTarget(src.name, VERSION, enrichment.changelog.key_field)
            )
        self.topics = sorted(set(self.to_views) | set(self.to_enrich))
        self.changelog_topics = sorted({c.topic for c in pipeline.changelogs})
        self._time_fields: dict[str, str] = {}
        for cl in pipeline.changelogs:
            self._time_fields.setdefault(cl.topic, cl.timestamp_field)
        for src in pipeline.event_sources:  # an event source's field wins, as it always did
            self._time_fields[src.topic] = src.timestamp_field

    def timestamp_field(self, topic: str) -> str:
        """Event-time field of a topic's records (called per record: a dict lookup)."""
        return self._time_fields[topic]

    def source_kind(self, topic: str) -> type[EventSource] | type[ChangelogSource]:
        """Whether the topic carries events or changelog versions."""
        return ChangelogSource if topic in self.changelog_topics else EventSource


__all__ = [
    "EVENT",
    "VERSION",
    "EnrichTarget",
    "RoutingPlan",
    "ViewTarget",
    "split_view_key",
    "view_key",
]
