"""Point-in-time feature retrieval from the offline changelog, vectorized.

For each labelled event (entity key ``k``, time ``t``) and each view, the value
is taken from the latest changelog row of ``k`` with ``event_timestamp <= t``;
with ``as_known_at`` the row must also have ``created_timestamp <= t``, and the
latest such row (largest ``event_timestamp``) is taken. That is what production
knew at ``t``: a row written late is invisible until it was written, and the
previous row stays in force until then. Before the entity's first visible row the
values are the view's empty values (0 for counts and sums, null for means,
shares and profile fields); the labelled event is never dropped.

Rows are first deduplicated on (key, ``event_timestamp``), keeping the earliest
``created_timestamp`` (docs/semantics.md). Rows with ``event_timestamp`` (or,
as known at, ``created_timestamp``) later than the latest label time are not
even read.

How (numpy, no per-row Python): keys become integer codes; rows are sorted by
one int64 composite of (code, time); each label's (code, t) is located with one
``searchsorted``. For ``as_known_at`` the rows are sorted by
``visible = max(event_timestamp, created_timestamp)`` instead, and a running
maximum over each entity's rows in that order (of their rank by
``event_timestamp``) gives, for every prefix, the row with the largest
``event_timestamp`` among those visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyarrow import fs as pafs

from pipelines.errors import ConfigError
from pipelines.sinks.parquet import resolve

EVENT_TS = "event_timestamp"
CREATED_TS = "created_timestamp"
_TS = pa.timestamp("ms", tz="UTC")


@dataclass(frozen=True)
class Retrieved:
    """Feature values for each labelled event, aligned with the labels.

    Attributes:
        values: one column per requested feature (timestamps as UTC ms timestamps).
        event_timestamp: per label, ``event_timestamp`` of the changelog row used
            (null when the entity had no visible row: empty values were used).
        created_timestamp: per label, ``created_timestamp`` of that row.
        rows_read: changelog rows read from the store.
        newest_ms: the newest ``event_timestamp`` read (None when nothing was read).
    """

    values: pa.Table
    event_timestamp: pa.Array
    created_timestamp: pa.Array
    rows_read: int
    newest_ms: int | None


def changelog_dataset(view: str) -> str:
    """Dataset name of a view's changelog in the offline store."""
    return f"features/{view}"


def read_changelog(
    uri: str,
    view: str,
    key: str,
    features: Sequence[str],
    until_ms: int,
    *,
    as_known_at: bool,
    s3_options: dict[str, Any] | None = None,
) -> pa.Table:
    """Changelog rows of ``view`` that could be visible at or before ``until_ms``.

    Only the key, the two timestamps and ``features`` are read; rows with
    ``event_timestamp > until_ms`` (and, ``as_known_at``, ``created_timestamp >
    until_ms``) are filtered in the scan.

    Raises:
        ConfigError: the offline store has no changelog for ``view`` or lacks a column.
    """
    filesystem, root = resolve(uri, s3_options)
    path = f"{root}/{changelog_dataset(view)}"
    where = f"offline store {uri}, dataset {changelog_dataset(view)}"
    try:
        missing = filesystem.get_file_info(path).type == pafs.FileType.NotFound
    except OSError as exc:
        raise ConfigError(f"cannot reach the offline store: {exc}", where=where) from exc
    if missing:
        raise ConfigError(
            f"no changelog for view {view}",
            where=where,
            fix="run the pipeline (livefeat run/backfill) or point offline_store.uri at its output",
        )
    data = ds.dataset(
        path,
        filesystem=filesystem,
        format="parquet",
        partitioning="hive",
        ignore_prefixes=[".", "_"],
    )
    columns = [key, EVENT_TS, CREATED_TS, *features]
    absent = [c for c in columns if c not in data.schema.names]
    if absent:
        raise ConfigError(
            f"the changelog has no column {', '.join(absent)}",
            where=where,
            fix="backfill the view with the current definitions (livefeat backfill)",
        )
    bound = pa.scalar(until_ms, pa.int64()).cast(_TS)
    condition = ds.field(EVENT_TS) <= bound
    if as_known_at:
        condition = condition & (ds.field(CREATED_TS) <= bound)
    return data.to_table(columns=columns, filter=condition)


def _array(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _millis(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if pa.types.is_timestamp(column.type):
        column = pc.cast(pc.cast(column, _TS), pa.int64())
    return np.asarray(column.to_numpy(), dtype=np.int64)


def _composite(
    codes_a: np.ndarray, times_a: np.ndarray, codes_b: np.ndarray, times_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One int64 per (code, time), ordered as the pairs are, for both arrays."""
    if len(times_a) == 0:
        return codes_a.astype(np.int64), codes_b.astype(np.int64)
    low = min(int(times_a.min()), int(times_b.min()))
    span = max(int(times_a.max()), int(times_b.max())) - low + 1
    n_codes = int(max(codes_a.max(initial=0), codes_b.max(initial=0))) + 1
    if n_codes * span < 2**62:
        return codes_a * span + (times_a - low), codes_b * span + (times_b - low)
    # Very long spans: use the rank of each time among all times instead.
    uniq = np.unique(np.concatenate([times_a, times_b]))
    span = len(uniq)
    rank_a = np.searchsorted(uniq, times_a)
    rank_b = np.searchsorted(uniq, times_b)
    return codes_a * span + rank_a, codes_b * span + rank_b


def point_in_time(
    changelog: pa.Table,
    key: str,
    features: Sequence[str],
    empty: Sequence[Any],
    label_keys: pa.Array | pa.ChunkedArray,
    label_times: np.ndarray,
    *,
    as_known_at: bool,
) -> Retrieved:
    """The value of each feature for each (key, time), from changelog rows (see module doc).

    Args:
        changelog: rows with ``key``, ``event_timestamp``, ``created_timestamp`` and
            ``features`` (duplicates allowed; any order).
        key: the entity key column.
        features: feature columns to return.
        empty: per feature, the value for an entity with no visible row.
        label_keys: entity key per label (null: no entity; every value null).
        label_times: epoch-ms time per label.
        as_known_at: also require ``created_timestamp <= t``.
    """
    n_labels = len(label_times)
    # Codes: the label keys' distinct values; changelog rows of other keys are skipped.
    encoded = pc.dictionary_encode(_array(pc.cast(label_keys, pa.string())))
    code_l = np.asarray(pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False))
    code_l = code_l.astype(np.int64)
    code_c = pc.index_in(changelog.column(key), value_set=encoded.dictionary)
    code_c = np.asarray(pc.fill_null(code_c, -1).to_numpy(), dtype=np.int64)
    rel = np.flatnonzero(code_c >= 0)  # changelog row numbers that matter
    code_c = code_c[rel]
    all_events = _millis(changelog.column(EVENT_TS))
    newest = int(all_events.max()) if len(all_events) else None
    event = all_events[rel]
    del all_events
    created = _millis(changelog.column(CREATED_TS))[rel]

    # Sort by (code, event_timestamp); keep the earliest created_timestamp per pair.
    comp, _ = _composite(code_c, event, code_l, label_times)
    order = np.argsort(comp)  # ties are sorted out below, so no need for a stable sort
    sorted_comp = comp[order]
    del comp
    dup = sorted_comp[1:] == sorted_comp[:-1]
    if dup.any():
        in_run = np.zeros(len(order), dtype=bool)
        in_run[1:] |= dup
        in_run[:-1] |= dup
        idx = np.flatnonzero(in_run)
        sub = order[idx]
        order[idx] = sub[np.lexsort((created[sub], sorted_comp[idx]))]
        keep = np.ones(len(order), dtype=bool)
        keep[1:] = ~dup
        order = order[keep]
    del sorted_comp, dup
    # order[p] = the p-th distinct row by (code, event_timestamp).
    code_sorted = code_c[order]
    if as_known_at:
        visible = np.maximum(event[order], created[order])
        comp_v, comp_q = _composite(code_sorted, visible, code_l, label_times)
        del visible
        by_visible = np.argsort(comp_v)  # ties: the running maximum covers all of them
        search = comp_v[by_visible]
        del comp_v
        best = np.maximum.accumulate(by_visible) if len(by_visible) else by_visible
    else:
        search, comp_q = _composite(code_sorted, event[order], code_l, label_times)
        best = np.arange(len(order))
    # Searching keys in sorted order is much faster than in random order.
    query_order = np.argsort(comp_q)
    pos = np.empty(n_labels, dtype=np.int64)
    pos[query_order] = np.searchsorted(search, comp_q[query_order], side="right") - 1
    found = (code_l >= 0) & (pos >= 0)
    chosen = np.zeros(n_labels, dtype=np.int64)
    chosen[found] = best[pos[found]]
    if len(order):
        found &= code_sorted[chosen] == code_l
        rows = rel[order[chosen]]
    else:
        rows = chosen
    take = pa.array(rows, pa.int64(), mask=~found)
    has_key = code_l >= 0
    empty_mask = pa.array(has_key & ~found)
    values: dict[str, pa.Array] = {}
    for name, zero in zip(features, empty, strict=True):
        column = changelog.column(name).take(take).combine_chunks()
        if zero is not None:
            column = pc.if_else(empty_mask, pa.scalar(zero, column.type), column)
        values[name] = column
    return Retrieved(
        values=pa.table(values),
        event_timestamp=changelog.column(EVENT_TS).take(take).combine_chunks(),
        created_timestamp=changelog.column(CREATED_TS).take(take).combine_chunks(),
        rows_read=changelog.num_rows,
        newest_ms=newest,
    )
