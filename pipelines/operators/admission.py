"""Admission: the first step after the sources. Decode, check rows, reject late events.

A raw Kafka record either becomes an accepted record (the schema's fields at
the pipeline's reader version, plus ``_partition`` and ``_offset``) or a
quarantine row with a reason code. Nothing raises: bad input is data.

Lateness is decided here and only here, so every view downstream agrees on
the set of accepted events: a record whose event time is at or before the
current watermark when it arrives is late (the watermark ``W`` promises that
no more events with time ``<= W`` come).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from pipelines.errors import CodecError
from pipelines.operators.routing import RoutingPlan
from quality.rows import RowRules
from schemas.codec import Decoder, SingleObjectCodec

LATE = "late"
STEP = "admit"


@dataclass(frozen=True)
class RawRecord:
    """A record as read from Kafka."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    value: bytes


def quarantine_row(
    raw: RawRecord,
    reason: str,
    detail: str,
    *,
    step: str = STEP,
    record: dict[str, Any] | None = None,
    event_time: int | None = None,
) -> dict[str, Any]:
    """A quarantine row: where the record came from, why it was held, and its content."""
    return {
        "reason": reason,
        "step": step,
        "topic": raw.topic,
        "partition": raw.partition,
        "offset": raw.offset,
        "kafka_timestamp": raw.timestamp,
        "event_time": event_time,
        "detail": detail,
        "record_json": None if record is None else json.dumps(record, sort_keys=True, default=str),
        "raw_value": None if record is not None else bytes(raw.value),
        "quarantined_at": int(time.time() * 1000),
    }


class Admission:
    """Decode + row rules + lateness for every topic of a routing plan."""

    def __init__(
        self,
        plan: RoutingPlan,
        codec: SingleObjectCodec,
        rules: RowRules | None = None,
        reader_versions: dict[str, int] | None = None,
    ) -> None:
        self.rules = rules or RowRules()
        pinned = reader_versions or {}
        self._decoders: dict[str, Decoder] = {
            t: codec.decoder(t, pinned.get(t)) for t in plan.topics
        }
        self._time_field = {t: plan.timestamp_field(t) for t in plan.topics}

    def admit(
        self, raw: RawRecord, watermark: int
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """``(accepted record, None)`` or ``(None, quarantine row)``."""
        decoder = self._decoders.get(raw.topic)
        if decoder is None:
            return None, quarantine_row(raw, "unrouted_topic", f"no view reads {raw.topic}")
        try:
            record = decoder.decode(
                raw.value, topic=raw.topic, partition=raw.partition, offset=raw.offset
            )
        except CodecError as exc:
            return None, quarantine_row(raw, exc.reason, exc.problem)
        time_field = self._time_field[raw.topic]
        event_time = record.get(time_field)
        broken = self.rules.violation(record, time_field, max(watermark, raw.timestamp))
        if broken is not None:
            return None, quarantine_row(
                raw, broken[0], broken[1], record=record, event_time=event_time
            )
        if event_time is not None and event_time <= watermark:
            return None, quarantine_row(
                raw,
                LATE,
                f"{time_field} {event_time} <= watermark {watermark} "
                f"({watermark - event_time + 1} ms behind)",
                record=record,
                event_time=event_time,
            )
        record["_partition"] = raw.partition
        record["_offset"] = raw.offset
        return record, None
