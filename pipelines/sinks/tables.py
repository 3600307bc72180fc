"""Arrow schemas of what the pipeline writes: feature changelogs, accepted events, quarantine.

Times are stored as UTC timestamps with millisecond precision; in the pipeline
they travel as epoch-millisecond ints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pipelines.features.definitions import FeatureView, ValueType
from schemas.store import SchemaStore

TS = pa.timestamp("ms", tz="UTC")
_ARROW: dict[ValueType, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "timestamp": TS,
}
_AVRO: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "bytes": pa.binary(),
    "enum": pa.string(),
}

QUARANTINE_SCHEMA = pa.schema(
    [
        ("reason", pa.string()),
        ("step", pa.string()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("kafka_timestamp", TS),
        ("event_time", TS),
        ("detail", pa.string()),
        ("record_json", pa.string()),
        ("raw_value", pa.binary()),
        ("quarantined_at", TS),
    ]
)


def changelog_schema(view: FeatureView) -> pa.Schema:
    """Entity key, event_timestamp, created_timestamp, then every feature of the view."""
    fields = [
        pa.field(view.entity.join_key, pa.string(), nullable=False),
        pa.field("event_timestamp", TS, nullable=False),
        pa.field("created_timestamp", TS, nullable=False),
    ]
    fields += [pa.field(f.name, _ARROW[f.value_type]) for f in view.features]
    return pa.schema(fields)


def event_schema(store: SchemaStore, subject: str, version_number: int | None = None) -> pa.Schema:
    """Accepted-event log schema of a topic: the reader schema's fields plus Kafka position."""
    version = store.get(subject, version_number)
    fields = []
    for f in version.schema["fields"]:
        t = f["type"]
        logical = t.get("logicalType") if isinstance(t, dict) else None
        base = t.get("type") if isinstance(t, dict) else t
        nullable = isinstance(t, list)
        if nullable:
            base = next(x for x in t if x != "null")
            if isinstance(base, dict):
                logical, base = base.get("logicalType"), base.get("type")
        arrow = TS if logical == "timestamp-millis" else _AVRO.get(str(base), pa.string())
        fields.append(pa.field(f["name"], arrow, nullable=nullable))
    fields += [pa.field("_partition", pa.int32()), pa.field("_offset", pa.int64())]
    return pa.schema(fields)


def to_table(schema: pa.Schema, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows (dicts, times as epoch-ms ints) into a table of ``schema``."""
    columns = []
    for field in schema:
        values = [r.get(field.name) for r in rows]
        if pa.types.is_timestamp(field.type):
            columns.append(pa.array(values, pa.int64()).cast(field.type))
        else:
            columns.append(pa.array(values, field.type))
    return pa.Table.from_arrays(columns, schema=schema)
