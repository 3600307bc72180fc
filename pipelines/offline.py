"""Read and maintain the offline store: changelogs, point-in-time lookups, compaction, stats.

Layout and row rules are in docs/semantics.md. In short: ``features/<view>`` holds
one changelog per view; replays may write a row again (same key, same
``event_timestamp``, same values, later ``created_timestamp``); readers keep the
earliest ``created_timestamp`` per (key, ``event_timestamp``), the moment the
value was first known.

* :func:`read_changelog`: a view's changelog, deduplicated, sorted by key and time.
* :func:`as_of`: the values at (key, t) points, including entities whose first row
  is later than t (empty values), which Feast's historical retrieval drops.
* :func:`compact`: merges each partition's small files into one, new file first,
  then deletes the files it merged. A reader running meanwhile sees every row at
  least once, and deduplication makes it exactly once.
* :func:`dataset_stats`: files, bytes, rows and time range per dataset.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from pipelines.config import Settings
from pipelines.features.definitions import FeatureView, Pipeline
from pipelines.features.engine import ViewEngine
from pipelines.jobs.marketplace import PIPELINE
from pipelines.sinks.parquet import read_dataset, resolve
from pipelines.sinks.tables import changelog_schema

Source = Settings | str
"""Where the offline store is: settings (``offline_store.uri`` and ``s3``) or a URI."""

_READ_ATTEMPTS = 5


def _location(source: Source, s3_options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    if isinstance(source, Settings):
        if s3_options is None:
            from pipelines.sinks.s3 import s3_options_for

            s3_options = s3_options_for(source)
        return source.offline_store.uri, s3_options or {}
    return source, s3_options or {}


def _view(view: str | FeatureView, pipeline: Pipeline) -> FeatureView:
    return view if isinstance(view, FeatureView) else pipeline.view(view)


def first_per_group(table: pa.Table, group: list[str], order: list[str]) -> pa.Table:
    """The first row of each ``group`` after sorting by ``group + order`` (ascending)."""
    table = table.sort_by([(c, "ascending") for c in group + order])
    n = table.num_rows
    if n < 2:
        return table
    starts = np.zeros(n, dtype=bool)
    starts[0] = True
    for name in group:
        column = table.column(name)
        differs = pc.fill_null(pc.not_equal(column.slice(1), column.slice(0, n - 1)), True)
        starts[1:] |= differs.to_numpy(zero_copy_only=False)
    return table.filter(pa.array(starts))


def dedupe_changelog(table: pa.Table, key: str) -> pa.Table:
    """One row per (``key``, event_timestamp): the one with the earliest created_timestamp."""
    return first_per_group(table, [key, "event_timestamp"], ["created_timestamp"])


def read_changelog(
    source: Source,
    view: str | FeatureView,
    *,
    dedupe: bool = True,
    pipeline: Pipeline = PIPELINE,
    s3_options: dict[str, Any] | None = None,
) -> pa.Table:
    """The changelog of ``view``, sorted by entity key and event_timestamp.

    Args:
        source: settings, or the offline store URI (directory or ``s3://bucket/prefix``).
        view: view name or definition.
        dedupe: keep one row per (key, event_timestamp), the earliest created_timestamp.
        pipeline: where to find a view given by name.
        s3_options: ``pyarrow.fs.S3FileSystem`` arguments (default: from the settings).

    Returns:
        A table of ``changelog_schema(view)``; empty when nothing was written yet.
    """
    definition = _view(view, pipeline)
    uri, opts = _location(source, s3_options)
    schema = changelog_schema(definition)
    dataset = f"features/{definition.name}"
    table = None
    for attempt in range(_READ_ATTEMPTS):
        try:
            table = read_dataset(uri, dataset, opts or None, columns=schema.names)
            break
        except OSError as exc:
            # Either nothing was written yet, or a compaction deleted a file between
            # listing and reading: list again (the merged file is already in place).
            if not _missing_file(exc):
                raise
            if not _exists(uri, dataset, opts):
                return schema.empty_table()
            if attempt == _READ_ATTEMPTS - 1:
                raise
    assert table is not None
    table = table.cast(schema)
    key = definition.entity.join_key
    if dedupe:
        return dedupe_changelog(table, key)
    return table.sort_by([(key, "ascending"), ("event_timestamp", "ascending"),
                          ("created_timestamp", "ascending")])


def _missing_file(exc: OSError) -> bool:
    text = str(exc)
    return isinstance(exc, FileNotFoundError) or any(
        s in text for s in ("does not exist", "No such file", "NoSuchKey")
    )


def _exists(uri: str, dataset: str, opts: dict[str, Any]) -> bool:
    filesystem, root = resolve(uri, opts or None)
    return filesystem.get_file_info(f"{root}/{dataset}").type != pafs.FileType.NotFound


def _epoch_ms_rows(table: pa.Table) -> list[dict[str, Any]]:
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            table = table.set_column(i, field.name, pc.cast(table.column(i), pa.int64()))
    return table.to_pylist()


def as_of(
    changelog: pa.Table,
    view: str | FeatureView,
    points: Sequence[tuple[Any, int]],
    *,
    known_at: bool = False,
    pipeline: Pipeline = PIPELINE,
) -> list[dict[str, Any]]:
    """Feature values at each (entity key, time in epoch ms) point.

    The value at t is the latest changelog row with ``event_timestamp <= t``; with
    ``known_at``, also ``created_timestamp <= t`` (what production knew at t). An
    entity without such a row has the view's empty values (counts 0, others null).

    Args:
        changelog: a deduplicated changelog (:func:`read_changelog`).
        view: view name or definition.
        points: (key, t) pairs; duplicates allowed, order kept.
        known_at: also require ``created_timestamp <= t``.
        pipeline: where to find a view given by name.

    Returns:
        One dict per point: the key, ``event_timestamp`` (= t) and every feature
        (times as epoch ms).
    """
    definition = _view(view, pipeline)
    key = definition.entity.join_key
    engine = ViewEngine(definition)
    names = engine.feature_names
    empty = dict(zip(names, engine.empty_values(), strict=True))
    index = (_latest_known(changelog, key, points) if known_at
             else _latest(changelog, key, points))
    hits = index >= 0
    taken = iter(_epoch_ms_rows(changelog.select(names).take(pa.array(index[hits]))))
    out = []
    for (k, t), hit in zip(points, hits, strict=True):
        values = next(taken) if hit else empty
        out.append({key: k, "event_timestamp": t, **values})
    return out


def _latest(changelog: pa.Table, key: str, points: Sequence[tuple[Any, int]]) -> np.ndarray:
    """Per point, the index of the changelog row with the key's largest event_timestamp <= t
    (-1 when there is none): one sorted as-of merge."""
    import pandas as pd

    right = pd.DataFrame({
        "k": changelog.column(key).to_pylist(),
        "t": pc.cast(changelog.column("event_timestamp"), pa.int64()).to_numpy(),
        "i": np.arange(changelog.num_rows, dtype=np.int64),
    }).sort_values("t", kind="stable")
    left = pd.DataFrame({
        "k": [k for k, _ in points],
        "t": np.fromiter((t for _, t in points), dtype=np.int64, count=len(points)),
        "o": np.arange(len(points), dtype=np.int64),
    }).sort_values("t", kind="stable")
    merged = pd.merge_asof(left, right, on="t", by="k", direction="backward")
    index = np.full(len(points), -1, dtype=np.int64)
    index[merged["o"].to_numpy()] = merged["i"].fillna(-1).to_numpy().astype(np.int64)
    return index


def _latest_known(changelog: pa.Table, key: str, points: Sequence[tuple[Any, int]]
                  ) -> np.ndarray:
    """Like :func:`_latest`, among rows with ``created_timestamp <= t`` too."""
    keys = changelog.column(key).to_pylist()
    times = pc.cast(changelog.column("event_timestamp"), pa.int64()).to_pylist()
    created = pc.cast(changelog.column("created_timestamp"), pa.int64()).to_pylist()
    by_key: dict[Any, list[int]] = defaultdict(list)
    for i in sorted(range(len(keys)), key=lambda j: times[j]):
        by_key[keys[i]].append(i)
    key_times = {k: [times[i] for i in rows] for k, rows in by_key.items()}
    index = np.full(len(points), -1, dtype=np.int64)
    for n, (k, t) in enumerate(points):
        rows = by_key.get(k, [])
        pos = bisect.bisect_right(key_times.get(k, []), t) - 1
        while pos >= 0 and created[rows[pos]] > t:
            pos -= 1
        if pos >= 0:
            index[n] = rows[pos]
    return index


# -- compaction --------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactionResult:
    """What :func:`compact` did to one dataset."""

    dataset: str
    partitions: int
    files_before: int
    files_after: int
    rows_before: int
    rows_after: int


def _data_files(filesystem: pafs.FileSystem, path: str) -> dict[str, list[str]]:
    """Data files under ``path`` grouped by directory (names starting with . or _ skipped)."""
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return {}
    groups: dict[str, list[str]] = defaultdict(list)
    for item in filesystem.get_file_info(pafs.FileSelector(path, recursive=True)):
        if item.type != pafs.FileType.File or not item.base_name.endswith(".parquet"):
            continue
        rel = item.path[len(path):].strip("/")
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        groups[item.path.rsplit("/", 1)[0]].append(item.path)
    return {d: sorted(files) for d, files in groups.items()}


def _dedupe_for(dataset: str, table: pa.Table) -> pa.Table:
    names = table.schema.names
    if "event_timestamp" in names and "created_timestamp" in names:
        return dedupe_changelog(table, names[0])
    if "_partition" in names and "_offset" in names:
        return first_per_group(table, ["_partition", "_offset"], [])
    return table


def compact(
    source: Source,
    dataset: str,
    *,
    min_files: int = 2,
    s3_options: dict[str, Any] | None = None,
) -> CompactionResult:
    """Merge the files of each partition of ``dataset`` that has at least ``min_files``.

    Changelogs are deduplicated as readers would (earliest created_timestamp per
    key and event_timestamp); event logs on Kafka position. The merged file is
    complete before any old file is deleted, and only the files that were merged
    are deleted: files a writer adds meanwhile stay.

    Args:
        source: settings or offline store URI.
        dataset: e.g. ``features/user_features``, ``events/livestream.bid_placed``.
        min_files: partitions with fewer files are left alone.
        s3_options: ``pyarrow.fs.S3FileSystem`` arguments (default: from the settings).
    """
    uri, opts = _location(source, s3_options)
    filesystem, root = resolve(uri, opts or None)
    local = isinstance(filesystem, pafs.LocalFileSystem)
    groups = _data_files(filesystem, f"{root}/{dataset.strip('/')}")
    partitions = files_before = files_after = rows_before = rows_after = 0
    for directory, files in sorted(groups.items()):
        files_before += len(files)
        if len(files) < min_files:
            files_after += len(files)
            rows = sum(pq.ParquetFile(filesystem.open_input_file(f)).metadata.num_rows
                       for f in files)
            rows_before += rows
            rows_after += rows
            continue
        tables = [pq.ParquetFile(filesystem.open_input_file(f)).read() for f in files]
        merged = pa.concat_tables(tables, promote_options="default")
        rows_before += merged.num_rows
        merged = _dedupe_for(dataset, merged)
        rows_after += merged.num_rows
        name = f"part-compacted-{uuid.uuid4().hex[:12]}.parquet"
        target = f"{directory}/{name}"
        if local:
            tmp = f"{directory}/.{name}.tmp"
            pq.write_table(merged, tmp, compression="zstd")
            os.replace(tmp, target)
        else:
            pq.write_table(merged, target, filesystem=filesystem, compression="zstd")
        for old in files:
            with contextlib.suppress(FileNotFoundError):  # another compaction got there first
                filesystem.delete_file(old)
        partitions += 1
        files_after += 1
    return CompactionResult(dataset, partitions, files_before, files_after, rows_before,
                            rows_after)


# -- stats -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetStats:
    """Size of one dataset. ``duplicates`` is None unless asked for (it reads every row)."""

    dataset: str
    partitions: int
    files: int
    bytes: int
    rows: int
    first_partition: str
    last_partition: str
    duplicates: int | None = None


def list_datasets(source: Source, s3_options: dict[str, Any] | None = None) -> list[str]:
    """Datasets present in the offline store: ``features/*``, ``events/*``, ``quarantine``."""
    uri, opts = _location(source, s3_options)
    filesystem, root = resolve(uri, opts or None)
    out: list[str] = []
    for group in ("features", "events"):
        path = f"{root}/{group}"
        if filesystem.get_file_info(path).type != pafs.FileType.Directory:
            continue
        for item in filesystem.get_file_info(pafs.FileSelector(path)):
            if item.type == pafs.FileType.Directory and not item.base_name.startswith((".", "_")):
                out.append(f"{group}/{item.base_name}")
    if filesystem.get_file_info(f"{root}/quarantine").type == pafs.FileType.Directory:
        out.append("quarantine")
    return sorted(out)


def dataset_stats(
    source: Source,
    dataset: str,
    *,
    duplicates: bool = False,
    s3_options: dict[str, Any] | None = None,
) -> DatasetStats:
    """Partitions, files, bytes and rows of ``dataset`` (rows from Parquet footers)."""
    uri, opts = _location(source, s3_options)
    filesystem, root = resolve(uri, opts or None)
    path = f"{root}/{dataset.strip('/')}"
    groups = _data_files(filesystem, path)
    files = [f for fs_ in groups.values() for f in fs_]
    size = sum(i.size or 0 for i in filesystem.get_file_info(files)) if files else 0
    rows = sum(pq.ParquetFile(filesystem.open_input_file(f)).metadata.num_rows for f in files)
    parts = sorted(d[len(path):].strip("/") for d in groups)
    dupes = None
    if duplicates and files:
        table = read_dataset(uri, dataset, opts or None)
        dupes = table.num_rows - _dedupe_for(dataset, table).num_rows
    return DatasetStats(dataset, len(groups), len(files), size, rows,
                        parts[0] if parts else "", parts[-1] if parts else "", dupes)
