"""Read and check a labels file: which events happened when, and which were fraud.

A labels file is Parquet (``.parquet``) or CSV (anything else) with:

- one or more entity key columns of the pipeline (``user_id``, ``seller_id``,
  ``stream_id``); a rule reads each view's features by that view's key, so a rule
  over seller features needs a ``seller_id`` column. A null key in a row means
  "no such entity for this event": that view's features are null for the row
  (every comparison with them is false);
- ``event_time``: when the event happened: epoch milliseconds, a timestamp, or an
  ISO-8601 string (UTC when it has no offset);
- ``label``: true for fraud: a boolean, 0/1, or a word (``chargeback``, ``fraud``,
  ``true``, ``yes`` / ``ok``, ``not``, ``legit``, ``false``, ``no``; any case).

Other columns (an order id, an amount) are carried to the output rows. A row
with a missing or unreadable time or label fails the whole file, naming rows:
a backtest that silently dropped labels would report wrong figures.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines.errors import ConfigError

EVENT_TIME = "event_time"
LABEL = "label"
TS = pa.timestamp("ms", tz="UTC")

POSITIVE = frozenset({"chargeback", "fraud", "true", "t", "yes", "y", "1", "positive"})
NEGATIVE = frozenset(
    {"ok", "not", "no_chargeback", "legit", "false", "f", "no", "n", "0", "negative"}
)
_INTEGER = re.compile(r"^-?\d+$")


@dataclass(frozen=True)
class Labels:
    """Labelled events, checked and normalized.

    Attributes:
        table: the file's columns; keys as strings, ``event_time`` as UTC ms
            timestamps, ``label`` as booleans; rows in file order.
        times: ``event_time`` as epoch-ms int64.
        keys: the entity key columns present.
        source: where the labels came from.
    """

    table: pa.Table
    times: np.ndarray
    keys: tuple[str, ...]
    source: str

    @property
    def positives(self) -> np.ndarray:
        """The labels as a bool array."""
        return np.asarray(self.table.column(LABEL).to_numpy(), dtype=bool)

    def __len__(self) -> int:
        return self.table.num_rows


def read_labels(
    path: str | Path,
    key_columns: Sequence[str],
    *,
    from_ms: int | None = None,
    to_ms: int | None = None,
) -> Labels:
    """Read a labels file and keep the events with ``from_ms <= event_time < to_ms``.

    Args:
        path: Parquet or CSV file.
        key_columns: the entity keys the pipeline knows; at least one must be present.
        from_ms: first event time kept (inclusive), None for no bound.
        to_ms: end of the period (exclusive), None for no bound.

    Raises:
        ConfigError: missing file or column, unreadable rows (named), or no label left.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError("labels file not found", where=str(file), fix="pass --labels FILE")
    try:
        if file.suffix.lower() == ".parquet":
            table = pq.read_table(file)
        else:
            # Keys stay strings ("007" is not 7); absent columns are ignored.
            options = pacsv.ConvertOptions(column_types={k: pa.string() for k in key_columns})
            table = pacsv.read_csv(file, convert_options=options)
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read labels: {exc}", where=str(file), fix="pass a Parquet or CSV file"
        ) from exc
    return normalize_labels(table, key_columns, str(file), from_ms=from_ms, to_ms=to_ms)


def normalize_labels(
    table: pa.Table,
    key_columns: Sequence[str],
    source: str,
    *,
    from_ms: int | None = None,
    to_ms: int | None = None,
) -> Labels:
    """Check and normalize an in-memory labels table (see :func:`read_labels`)."""
    names = table.schema.names
    keys = tuple(k for k in key_columns if k in names)
    for column in (EVENT_TIME, LABEL):
        if column not in names:
            raise ConfigError(
                f"no {column!r} column (columns: {', '.join(names)})",
                where=source,
                fix=f"add {column!r}; see docs/backtesting.md for the labels format",
            )
    if not keys:
        raise ConfigError(
            f"no entity key column: need one of {', '.join(key_columns)}",
            where=source,
            fix="add the key the rules' features are looked up by (e.g. user_id)",
        )
    table = table.combine_chunks()
    for key in keys:
        column = table.column(key)
        if not pa.types.is_string(column.type):
            table = _set(table, key, pc.cast(column, pa.string()))
    times = _times(table.column(EVENT_TIME), source)
    table = _set(table, EVENT_TIME, pa.array(times, pa.int64()).cast(TS))
    table = _set(table, LABEL, _labels(table.column(LABEL), source))
    keep = np.ones(len(times), dtype=bool)
    if from_ms is not None:
        keep &= times >= from_ms
    if to_ms is not None:
        keep &= times < to_ms
    if not keep.all():
        table, times = table.filter(pa.array(keep)), times[keep]
    if table.num_rows == 0:
        raise ConfigError(
            "no labelled event in the chosen period",
            where=source,
            fix="widen --from/--to, or check the labels' event_time values",
        )
    return Labels(table, times, keys, source)


def _set(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def _bad_rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)[:5] + 1
    more = " ..." if mask.sum() > 5 else ""
    return ", ".join(str(r) for r in rows) + more


def _times(column: pa.ChunkedArray, source: str) -> np.ndarray:
    """``event_time`` as epoch ms, whatever form the file gives it in."""
    kind = column.type
    values: pa.ChunkedArray | pa.Array = column
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        if pa.types.is_date(kind):
            values = pc.cast(values, pa.timestamp("ms"))
        values = pc.cast(
            pc.cast(values, pa.timestamp("ms", tz=getattr(kind, "tz", None)), safe=False),
            pa.int64(),
        )
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = pd.Series(column.to_pandas(), dtype=object)
        integer = text.str.fullmatch(_INTEGER).fillna(False).astype(bool).to_numpy()
        parsed = pd.to_datetime(text.where(~integer), utc=True, format="ISO8601", errors="coerce")
        unreadable = parsed.isna().to_numpy() & ~integer
        ms = np.where(unreadable, 0, parsed.dt.as_unit("ms").array.asi8)
        ms[integer] = text[integer].astype("int64").to_numpy()
        values = pa.array(ms, pa.int64(), mask=unreadable)
    elif not pa.types.is_integer(kind):
        raise ConfigError(
            f"event_time has type {kind}",
            where=source,
            fix="write event_time as epoch milliseconds, a timestamp or an ISO-8601 string",
        )
    array = pc.cast(values, pa.int64())
    missing = np.asarray(pc.is_null(array).to_numpy(zero_copy_only=False), dtype=bool)
    if missing.any():
        raise ConfigError(
            f"{int(missing.sum())} rows have no readable event_time (rows {_bad_rows(missing)})",
            where=source,
            fix="give every row an event_time: epoch ms or ISO 8601 such as 2024-05-01T12:00:00Z",
        )
    return np.asarray(pc.fill_null(array, 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def _labels(column: pa.ChunkedArray, source: str) -> pa.Array:
    """``label`` as booleans; every other value is an error naming the rows."""
    kind = column.type
    if pa.types.is_boolean(kind):
        result = column.combine_chunks()
    elif pa.types.is_integer(kind):
        ints = pc.cast(column, pa.int64()).combine_chunks()
        ok = pc.is_in(ints, value_set=pa.array([0, 1]))
        result = pc.if_else(ok, pc.equal(ints, 1), pa.scalar(None, pa.bool_()))
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        words = pc.utf8_lower(pc.utf8_trim_whitespace(column.combine_chunks()))
        positive = pc.is_in(words, value_set=pa.array(sorted(POSITIVE)))
        negative = pc.is_in(words, value_set=pa.array(sorted(NEGATIVE)))
        result = pc.if_else(
            positive, True, pc.if_else(negative, False, pa.scalar(None, pa.bool_()))
        )
    else:
        raise ConfigError(
            f"label has type {kind}",
            where=source,
            fix="write label as a boolean, 0/1, or chargeback/ok",
        )
    bad = np.asarray(pc.is_null(result).to_numpy(zero_copy_only=False), dtype=bool)
    if bad.any():
        seen = pc.unique(column.combine_chunks().filter(pa.array(bad))).to_pylist()[:5]
        raise ConfigError(
            f"{int(bad.sum())} rows have an unreadable label {seen} (rows {_bad_rows(bad)})",
            where=source,
            fix="use true/false, 1/0, chargeback/ok (see docs/backtesting.md)",
        )
    return result
