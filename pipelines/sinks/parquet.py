"""Parquet datasets in a local directory or on S3, written atomically, partitioned by date and hour.

Layout: ``<root>/<dataset>/date=YYYY-MM-DD/hour=HH/part-<writer>-<seq>-<uuid>.parquet``.
A file is written under a temporary name and renamed into place (local), or
uploaded as one object (S3, where a PUT is atomic), so no reader ever sees a
half-written file. Readers skip names starting with ``.`` or ``_``.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from pipelines.errors import SinkError
from pipelines.sinks.base import Sink
from pipelines.sinks.tables import to_table


def partition_of(epoch_ms: int) -> str:
    """``date=YYYY-MM-DD/hour=HH`` of a UTC epoch-ms time."""
    t = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return f"date={t:%Y-%m-%d}/hour={t:%H}"


def resolve(uri: str, s3_options: dict[str, Any] | None = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and root path for a local directory or ``s3://bucket/prefix``."""
    if uri.startswith("s3://"):
        opts = dict(s3_options or {})
        return pafs.S3FileSystem(**opts), uri[len("s3://") :].rstrip("/")
    root = Path(uri).expanduser().resolve()
    return pafs.LocalFileSystem(), str(root)


class ParquetSink(Sink):
    """Writes each batch as one Parquet file per (dataset, date, hour) partition.

    Args:
        uri: local directory or ``s3://bucket/prefix``.
        writer_id: distinguishes parallel writers in file names (e.g. the subtask index).
        time_columns: per dataset, the epoch-ms column that picks the partition
            (default ``event_timestamp``).
        s3_options: keyword arguments of ``pyarrow.fs.S3FileSystem`` for ``s3://`` URIs.
    """

    def __init__(
        self,
        uri: str,
        writer_id: str = "0",
        time_columns: dict[str, str] | None = None,
        s3_options: dict[str, Any] | None = None,
    ) -> None:
        self.uri = uri
        self.fs, self.root = resolve(uri, s3_options)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.writer_id = writer_id
        self.time_columns = time_columns or {}
        self._seq = 0

    def write(self, dataset: str, schema: pa.Schema, rows: Sequence[dict[str, Any]]) -> int:
        if not rows:
            return 0
        column = self.time_columns.get(dataset, "event_timestamp")
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            groups[partition_of(int(row[column]))].append(row)
        for partition, part_rows in sorted(groups.items()):
            self._write_file(f"{self.root}/{dataset}/{partition}", to_table(schema, part_rows))
        return len(rows)

    def _write_file(self, directory: str, table: pa.Table) -> None:
        self._seq += 1
        name = f"part-{self.writer_id}-{self._seq:06d}-{uuid.uuid4().hex[:12]}.parquet"
        try:
            if self.local:
                os.makedirs(directory, exist_ok=True)
                tmp = f"{directory}/.{name}.tmp"
                pq.write_table(table, tmp, compression="zstd")
                os.replace(tmp, f"{directory}/{name}")
            else:
                pq.write_table(table, f"{directory}/{name}", filesystem=self.fs, compression="zstd")
        except (OSError, pa.ArrowException) as exc:
            raise SinkError(
                f"could not write {table.num_rows} rows: {exc}",
                where=f"{self.uri}: {directory}",
                fix="check that the offline store location exists and is writable",
            ) from exc


def read_dataset(
    uri: str,
    dataset: str,
    s3_options: dict[str, Any] | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Every row of ``dataset`` (no deduplication), without the partition columns."""
    filesystem, root = resolve(uri, s3_options)
    path = f"{root}/{dataset}"
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{uri}/{dataset}")
    data = ds.dataset(
        path,
        filesystem=filesystem,
        format="parquet",
        partitioning="hive",
        ignore_prefixes=[".", "_"],
    )
    names = columns or [n for n in data.schema.names if n not in ("date", "hour")]
    return data.to_table(columns=names)
