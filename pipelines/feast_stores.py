"""Feast store classes that keep livefeat's guarantees; named by class path in feature_store.yaml.

Online stores (the online value of an entity only ever moves forward in event time):

* :class:`LivefeatSqliteOnlineStore`: Feast's SQLite store upserts every write
  unconditionally, so a replay after a restart (older rows sent again) would put
  old values back, and it keeps event times in whole seconds. This store adds an
  ``event_ts_ms`` column and upserts only when the new event time (milliseconds)
  is later than the stored one.
* :class:`LivefeatRedisOnlineStore`: Feast's Redis writer reads the stored event
  times, then writes in a second round trip, so two writers can interleave. This
  store compares and sets in one server-side script per entity, on an integer
  millisecond field ``_ts_ms:<view>`` kept beside Feast's own ``_ts:<view>``.

Both skip a write whose event time equals the stored one: the changelog has one
row per (entity, event time), and a repeat of it carries the same values
(docs/semantics.md). Reads are Feast's own (the SQLite store returns the event
time with millisecond precision).

Offline store: :class:`LivefeatFileOfflineStore` is Feast's file (dask) store.
Importing this module lets it read ``s3://`` sources through pyarrow when the
optional ``s3fs`` package is not installed (:func:`pipelines.sinks.s3.register_fsspec_s3`),
and its historical retrieval reads each source as one dask partition, which
avoids a failure of Feast's store on entities without any feature row.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from feast import Entity, FeatureView, RepoConfig
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.offline_stores.dask import (
    DaskOfflineStore,
    DaskOfflineStoreConfig,
    DaskRetrievalJob,
)
from feast.infra.online_stores.helpers import _mmh3, extract_text_and_num
from feast.infra.online_stores.redis import (
    RedisOnlineStore,
    RedisOnlineStoreConfig,
    _versioned_fv_name,
)
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    _alter_table_add_column_if_missing,
    _quote_id,
    _table_id,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp

from pipelines.sinks.s3 import register_fsspec_s3

SQLITE_TYPE = "pipelines.feast_stores.LivefeatSqliteOnlineStore"
REDIS_TYPE = "pipelines.feast_stores.LivefeatRedisOnlineStore"
OFFLINE_TYPE = "pipelines.feast_stores.LivefeatFileOfflineStore"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

WriteRow = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]


def epoch_ms(ts: datetime) -> int:
    """Exact epoch milliseconds of a datetime (naive means UTC), rounding down.

    >>> epoch_ms(datetime(1970, 1, 1, 0, 0, 1, 999_999, tzinfo=UTC))
    1999
    """
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // _MS


def from_epoch_ms(ms: int) -> datetime:
    """UTC datetime of epoch milliseconds."""
    return _EPOCH + ms * _MS


class _KeyCache:
    """Feast's serialized entity keys, remembered: the same entities are written again and
    again, and Feast's serializer is pure Python. Bounded; cleared when full."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._keys: dict[tuple[bytes, int, bytes], bytes] = {}

    def get(self, entity_key: EntityKeyProto, version: int, suffix: bytes = b"") -> bytes:
        ident = (entity_key.SerializeToString(), version, suffix)
        found = self._keys.get(ident)
        if found is None:
            if len(self._keys) >= self.limit:
                self._keys.clear()
            found = serialize_entity_key(entity_key, entity_key_serialization_version=version)
            found = self._keys[ident] = found + suffix
        return found


# -- SQLite ------------------------------------------------------------------------------


class LivefeatSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """Config of :class:`LivefeatSqliteOnlineStore` (the options of Feast's SQLite store)."""

    type: Literal["pipelines.feast_stores.LivefeatSqliteOnlineStore"] = SQLITE_TYPE  # type: ignore[assignment]


class LivefeatSqliteOnlineStore(SqliteOnlineStore):
    """Feast's SQLite online store, writing only values newer (in ms) than the stored ones."""

    _ms_ready: set[str] | None = None
    _key_cache: _KeyCache | None = None
    last_applied: int = 0
    """Entities whose values the last write changed (the others were not newer)."""

    def _ensure_ms_column(self, conn: Any, table_name: str) -> None:
        if self._ms_ready is None:
            self._ms_ready = set()
        if table_name not in self._ms_ready:
            _alter_table_add_column_if_missing(conn, table_name, "event_ts_ms", "INTEGER")
            self._ms_ready.add(table_name)

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        """Create the tables (Feast's layout plus ``event_ts_ms``), drop deleted ones."""
        super().update(config, tables_to_delete, tables_to_keep, entities_to_delete,
                       entities_to_keep, partial)
        conn = self._get_conn(config)
        versioning = config.registry.enable_online_feature_view_versioning
        for table in tables_to_keep:
            self._ensure_ms_column(conn, _table_id(config.project, table, versioning))
        if self._ms_ready is not None:
            for table in tables_to_delete:
                self._ms_ready.discard(_table_id(config.project, table, versioning))

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[WriteRow],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Upsert each entity's values when their event time is later than the stored one."""
        conn = self._get_conn(config)
        name = _table_id(config.project, table,
                         config.registry.enable_online_feature_view_versioning)
        self._ensure_ms_column(conn, name)
        q = _quote_id(name)
        sql = (
            f"INSERT INTO {q} (entity_key, feature_name, value, value_text, event_ts, "
            "created_ts, event_ts_ms) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "value_text = excluded.value_text, event_ts = excluded.event_ts, "
            "created_ts = excluded.created_ts, event_ts_ms = excluded.event_ts_ms "
            f"WHERE {q}.event_ts_ms IS NULL OR excluded.event_ts_ms > {q}.event_ts_ms"
        )
        version = config.entity_key_serialization_version
        if self._key_cache is None:
            self._key_cache = _KeyCache()
        params = []
        for entity_key, values, ts, created in data:
            key = self._key_cache.get(entity_key, version)
            ms = epoch_ms(ts)
            created_s = None if created is None else epoch_ms(created) // 1000
            for feature, val in values.items():
                text, _ = extract_text_and_num(val, False)
                params.append((key, feature, val.SerializeToString(), text, ms // 1000,
                               created_s, ms))
        with conn:
            before = conn.total_changes
            conn.executemany(sql, params)
            changed = conn.total_changes - before
        width = max(1, len(data[0][1])) if data else 1
        self.last_applied = changed // width
        if progress:
            progress(len(data))

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        """Values and event time (millisecond precision) of each entity, or (None, None)."""
        conn = self._get_conn(config)
        name = _table_id(config.project, table,
                         config.registry.enable_online_feature_view_versioning)
        self._ensure_ms_column(conn, name)
        version = config.entity_key_serialization_version
        keys = [serialize_entity_key(k, entity_key_serialization_version=version)
                for k in entity_keys]
        if not keys:
            return []
        rows = conn.execute(
            f"SELECT entity_key, feature_name, value, event_ts_ms FROM {_quote_id(name)} "
            f"WHERE entity_key IN ({','.join('?' * len(keys))})",
            keys,
        ).fetchall()
        values: dict[bytes, dict[str, ValueProto]] = {}
        latest: dict[bytes, int] = {}
        for key, feature, blob, ms in rows:
            val = ValueProto()
            val.ParseFromString(blob)
            values.setdefault(key, {})[feature] = val
            latest[key] = max(latest.get(key, 0), ms or 0)
        return [
            (from_epoch_ms(latest[k]), values[k]) if k in values else (None, None) for k in keys
        ]


# -- Redis -------------------------------------------------------------------------------

# KEYS[1] entity hash; ARGV[1] ms field, ARGV[2] event time ms, ARGV[3] ttl seconds (0: none),
# ARGV[4..] field/value pairs (Feast's _ts field and the features). 1 = written, 0 = not newer.
_COMPARE_AND_SET = """
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored and tonumber(stored) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], unpack(ARGV, 4))
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
"""


class LivefeatRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Config of :class:`LivefeatRedisOnlineStore` (the options of Feast's Redis store)."""

    type: Literal["pipelines.feast_stores.LivefeatRedisOnlineStore"] = REDIS_TYPE  # type: ignore[assignment]


class LivefeatRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis online store with an atomic millisecond compare-and-set on writes."""

    _script: Any = None
    _key_cache: _KeyCache | None = None
    last_applied: int = 0
    """Entities whose values the last write changed (the others were not newer)."""

    @staticmethod
    def ms_field(view_name: str) -> str:
        """Hash field holding the entity's event time in epoch ms for ``view_name``."""
        return f"_ts_ms:{view_name}"

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[WriteRow],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Write each entity's values when their event time is later than the stored one."""
        store_config = config.online_store
        client = self._get_client(store_config)
        if self._script is None:
            self._script = client.register_script(_COMPARE_AND_SET)
        view = _versioned_fv_name(table, config)
        ts_field = f"_ts:{view}"
        ms_field = self.ms_field(view)
        ttl = int(store_config.key_ttl_seconds or 0)
        version = config.entity_key_serialization_version
        if self._key_cache is None:
            self._key_cache = _KeyCache()
        suffix = config.project.encode("utf8")
        names: dict[str, bytes] = {}
        with client.pipeline(transaction=False) as pipe:
            for entity_key, values, ts, _ in data:
                proto_ts = Timestamp()
                proto_ts.FromDatetime(ts if ts.tzinfo else ts.replace(tzinfo=UTC))
                args: list[Any] = [ms_field, epoch_ms(ts), ttl, ts_field,
                                   proto_ts.SerializeToString()]
                for feature, val in values.items():
                    field = names.get(feature)
                    if field is None:
                        field = names[feature] = _mmh3(f"{view}:{feature}")
                    args += [field, val.SerializeToString()]
                key = self._key_cache.get(entity_key, version, suffix)  # = Feast's _redis_key
                self._script(keys=[key], args=args, client=pipe)
            results = pipe.execute()
        self.last_applied = sum(int(r) for r in results)
        if progress:
            progress(len(data))

    def delete_table(self, config: RepoConfig, table: FeatureView) -> None:
        """Feast's deletion, plus the millisecond field it does not know about."""
        super().delete_table(config, table)
        client = self._get_client(config.online_store)
        from feast.infra.online_stores.helpers import _redis_key_prefix

        pattern = b"".join([_redis_key_prefix(table.join_keys), b"*",
                            config.project.encode("utf8")])
        with client.pipeline(transaction=False) as pipe:
            for key in client.scan_iter(pattern):
                pipe.hdel(key, self.ms_field(_versioned_fv_name(table, config)))
            pipe.execute()


# -- offline -----------------------------------------------------------------------------


class LivefeatFileOfflineStoreConfig(DaskOfflineStoreConfig):
    """Config of :class:`LivefeatFileOfflineStore` (no options)."""

    type: Literal["pipelines.feast_stores.LivefeatFileOfflineStore"] = OFFLINE_TYPE  # type: ignore[assignment]


_READ_LOCK = threading.RLock()


@contextlib.contextmanager
def _one_partition_per_source() -> Iterator[None]:
    """While active, Feast's dask store reads each source as a single dask partition.

    With several partitions (one per Parquet file), the point-in-time join sorts a
    timestamp column that holds NaT for entity rows without any feature row, and
    dask cannot compute sort divisions over NaT ("Divisions calculation failed for
    non-numeric column 'created_timestamp'"): one unknown entity fails the whole
    retrieval. With one partition there are no divisions to compute.
    """
    import feast.infra.offline_stores.dask as feast_dask

    with _READ_LOCK:
        original = feast_dask._read_datasource

        def read_one_partition(data_source: Any, repo_path: Any) -> Any:
            return original(data_source, repo_path).repartition(npartitions=1)

        feast_dask._read_datasource = read_one_partition
        try:
            yield
        finally:
            feast_dask._read_datasource = original


class LivefeatFileOfflineStore(DaskOfflineStore):
    """Feast's file offline store, with two fixes.

    * ``s3://`` sources are read through pyarrow when s3fs is not installed.
    * Historical retrieval works when the entity dataframe names entities that
      have no feature row at all (they come back with null features); Feast's
      own store fails on them as soon as a source has more than one file.
    """

    @staticmethod
    def get_historical_features(  # type: ignore[override]
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: Any,
        registry: Any,
        project: str,
        full_feature_names: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Feast's retrieval, evaluated with each source read as one partition."""
        job = DaskOfflineStore.get_historical_features(
            config, feature_views, feature_refs, entity_df, registry, project,
            full_feature_names, **kwargs,
        )
        if not isinstance(job, DaskRetrievalJob):  # pragma: no cover - Feast changed
            return job
        inner = job.evaluation_function

        def evaluate() -> Any:
            with _one_partition_per_source():
                return inner()

        job.evaluation_function = evaluate
        return job


register_fsspec_s3()
