"""The online sink: the latest value per entity into Feast's online store.

It receives the same changelog rows as the offline sink (dataset
``features/<view>``), keeps the newest row per entity of each batch, converts it
to Feast values and writes it through the online store's ``online_write_batch``.
The store classes of :mod:`pipelines.feast_stores` write a value only when its
event time (milliseconds) is later than the stored one, so:

* a replay after a restart (older rows sent again) never replaces a newer value;
* two updates within the same second both land, the later one last;
* decay rows (a window emptied: counts 0, means null) are ordinary updates.

Connection errors and timeouts are retried with backoff and counted as outages
(:mod:`pipelines.sinks.retry`); :class:`~pipelines.errors.SinkError` is raised
only after ``give_up_after_s`` seconds without success.

>>> from pipelines.config import Settings
>>> sink = OnlineSink(Settings())   # connects on first write
>>> sink.view_for("features/user_features").name
'user_features'
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.config import Settings
from pipelines.errors import SinkError
from pipelines.features.definitions import FeatureView as ViewDef
from pipelines.features.definitions import Pipeline
from pipelines.jobs.marketplace import PIPELINE
from pipelines.sinks.base import Sink
from pipelines.sinks.retry import OutageStats, Retrier, RetryPolicy

log = logging.getLogger(__name__)

_DATASET_PREFIX = "features/"


def is_transient_online_error(exc: BaseException) -> bool:
    """True for errors that mean "the online store is away or busy": worth a retry."""
    try:
        import redis.exceptions as rex
    except ImportError:  # pragma: no cover - redis is a dependency
        rex = None  # type: ignore[assignment]
    if rex is not None and isinstance(
        exc, rex.ConnectionError | rex.TimeoutError | rex.BusyLoadingError | rex.TryAgainError
    ):
        return True
    if rex is not None and isinstance(exc, rex.ResponseError):
        # CLIENT PAUSE / failover / a script stuck on the server
        text = str(exc)
        return text.startswith(("BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"))
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc) or "busy" in str(exc)
    return isinstance(exc, ConnectionError | TimeoutError)


@dataclass
class OnlineWriteStats:
    """What the online sink did.

    Attributes:
        rows: changelog rows received.
        entities: entity values sent to the store (newest row per entity per batch).
        applied: entity values the store took (the others were not newer than the stored value).
    """

    rows: int = 0
    entities: int = 0
    applied: int = 0


def _to_value(kind: str) -> Callable[[Any], Any]:
    from feast.protos.feast.types.Value_pb2 import Value

    if kind == "int64":
        return lambda v: Value() if v is None else Value(int64_val=int(v))
    if kind == "float64":
        return lambda v: Value() if v is None else Value(double_val=float(v))
    if kind == "bool":
        return lambda v: Value() if v is None else Value(bool_val=bool(v))
    if kind == "string":
        return lambda v: Value() if v is None else Value(string_val=str(v))
    if kind == "timestamp":
        # Feast's online format for timestamps is whole epoch seconds.
        return lambda v: Value() if v is None else Value(unix_timestamp_val=int(v) // 1000)
    raise SinkError(f"no Feast value type for {kind!r}")


class OnlineSink(Sink):
    """Writes the newest value per entity of each batch to Feast's online store.

    Args:
        settings: ``online_store`` picks SQLite or Redis (see :mod:`pipelines.feast_repo`).
        pipeline: the definitions whose views the rows belong to.
        project: Feast project (default: from the settings); tests use a unique one.
        policy: backoff and give-up time for outages.
        batch_entities: entities per write round trip.
        base_dir: directory relative settings paths are relative to (default: cwd).
        redis_socket_timeout_s: socket timeout of the Redis connection; a paused or
            unreachable server shows up as a timeout after this long.
    """

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline = PIPELINE,
        *,
        project: str | None = None,
        policy: RetryPolicy | None = None,
        batch_entities: int = 2_000,
        base_dir: Path | None = None,
        redis_socket_timeout_s: float = 2.0,
    ) -> None:
        from pipelines.runtime.worker_logs import route_to_flink_log

        route_to_flink_log()  # inside a Flink worker, outage messages go to the Flink log
        self.settings = settings
        self.pipeline = pipeline
        self.project = project
        self.batch_entities = batch_entities
        self.base_dir = base_dir
        self.redis_socket_timeout_s = redis_socket_timeout_s
        online = settings.online_store
        target = (f"redis {online.redis_connection_string}" if online.type == "redis"
                  else f"sqlite {online.sqlite_path}")
        if policy is None:
            give_up = getattr(online, "retry_give_up_s", None)  # optional setting
            policy = RetryPolicy() if give_up is None else RetryPolicy(give_up_after_s=give_up)
        self.retrier = Retrier(
            f"online store ({target})",
            policy,
            is_transient_online_error,
            fix="check that the online store is up (for Redis: `redis-cli -u ... ping`); "
            "after a restart the job replays from its last checkpoint, and older values "
            "never replace newer ones",
        )
        self.stats = OnlineWriteStats()
        self._config: Any = None
        self._store: Any = None
        self._views: dict[str, Any] = {}
        self._ready = False
        self._converters: dict[str, list[tuple[str, Callable[[Any], Any]]]] = {}

    @property
    def outages(self) -> OutageStats:
        """Outages seen so far (count, retries, seconds)."""
        return self.retrier.stats

    def view_for(self, dataset: str) -> ViewDef:
        """The pipeline view a dataset (``features/<view>`` or ``<view>``) holds.

        Raises:
            SinkError: no view of the pipeline has that name.
        """
        name = dataset[len(_DATASET_PREFIX):] if dataset.startswith(_DATASET_PREFIX) else dataset
        try:
            return self.pipeline.view(name)
        except KeyError:
            raise SinkError(
                f"dataset {dataset!r} is not a feature view of pipeline {self.pipeline.name}",
                where="online sink",
                fix="send only features/<view> datasets to the online sink; views: "
                + ", ".join(v.name for v in self.pipeline.views),
            ) from None

    def _connect(self) -> None:
        from feast import RepoConfig
        from feast.infra.online_stores.helpers import get_online_store_from_config

        from pipelines.feast_repo import feature_store_dict, repo_for_settings

        body = feature_store_dict(self.settings, project=self.project, base_dir=self.base_dir)
        online = body["online_store"]
        if self.settings.online_store.type == "redis" and "socket_timeout" not in str(
            online["connection_string"]
        ):
            t = self.redis_socket_timeout_s
            online["connection_string"] += f",socket_timeout={t},socket_connect_timeout={t}"
        self._config = RepoConfig(repo_path=self.base_dir or Path.cwd(), **body)
        self._store = get_online_store_from_config(self._config.online_store)
        repo = repo_for_settings(self.settings, self.pipeline, self.base_dir)
        self._views = repo.views
        self._entities = list(repo.entities.values())

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        if self._store is None:
            self._connect()

        def create_tables() -> None:
            self._store.update(self._config, [], list(self._views.values()), [],
                               self._entities, True)

        self.retrier.call(create_tables, what="create the online tables")
        self._ready = True

    def _convert(self, view: ViewDef) -> list[tuple[str, Callable[[Any], Any]]]:
        conv = self._converters.get(view.name)
        if conv is None:
            conv = [(f.name, _to_value(f.value_type)) for f in view.features]
            self._converters[view.name] = conv
        return conv

    def write(self, dataset: str, schema: pa.Schema, rows: Sequence[dict[str, Any]]) -> int:
        """Write the newest row per entity of ``rows`` (changelog rows of one view).

        Returns the number of rows received. Raises SinkError after an outage longer
        than the policy's give-up time, or for rows that do not fit the view.
        """
        if not rows:
            return 0
        view = self.view_for(dataset)
        self._ensure_ready()
        key = view.entity.join_key
        newest: dict[Any, dict[str, Any]] = {}
        for row in rows:
            k = row[key]
            seen = newest.get(k)
            if seen is None or int(row["event_timestamp"]) > int(seen["event_timestamp"]):
                newest[k] = row
        data = self._feast_rows(view, list(newest.values()))
        fv = self._views[view.name]
        for start in range(0, len(data), self.batch_entities):
            chunk = data[start:start + self.batch_entities]

            def send(chunk: list[Any] = chunk) -> int:
                self._store.online_write_batch(self._config, fv, chunk, None)
                return int(getattr(self._store, "last_applied", len(chunk)))

            self.stats.applied += self.retrier.call(
                send, what=f"write {len(chunk)} entities of {view.name}"
            )
        self.stats.rows += len(rows)
        self.stats.entities += len(data)
        return len(rows)

    def _feast_rows(self, view: ViewDef, rows: list[dict[str, Any]]) -> list[Any]:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        from pipelines.feast_stores import from_epoch_ms

        key = view.entity.join_key
        conv = self._convert(view)
        out = []
        for row in rows:
            try:
                values = {name: to(row.get(name)) for name, to in conv}
                entity = EntityKey(join_keys=[key], entity_values=[Value(string_val=str(row[key]))])
                created = row.get("created_timestamp")
                out.append((
                    entity, values, from_epoch_ms(int(row["event_timestamp"])),
                    None if created is None else from_epoch_ms(int(created)),
                ))
            except (KeyError, TypeError, ValueError) as exc:
                raise SinkError(
                    f"changelog row does not fit view {view.name}: {type(exc).__name__}: {exc}",
                    where=f"online sink, {key}={row.get(key)!r}",
                    fix="rows must carry the entity key, event_timestamp (epoch ms) and the "
                    "view's features with their declared types",
                ) from exc
        return out

    def close(self) -> None:
        """Close the store's connections; logs what the sink did."""
        if self._store is None:
            return
        log.info(
            "online sink: %d rows, %d entity values sent, %d applied; %d outages "
            "(%d retries, %.1f s)", self.stats.rows, self.stats.entities, self.stats.applied,
            self.outages.outages, self.outages.retries, self.outages.outage_s,
        )
        conn = getattr(self._store, "_conn", None)
        if conn is not None:
            conn.close()
            self._store._conn = None
        client = getattr(self._store, "_client", None)
        if client is not None:
            client.close()
            self._store._client = None
        self._store = None
        self._ready = False
