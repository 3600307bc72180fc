"""Feast objects and configuration generated from the pipeline definitions and the settings.

Nothing about a feature is written twice: the entities, the FileSources (the
changelogs the pipeline writes at ``<offline_store.uri>/features/<view>``) and
the FeatureViews of ``feature_repo/`` are built here from
:data:`pipelines.jobs.marketplace.PIPELINE`, and ``feature_repo/livefeat_repo.py``
only names them. The Feast configuration (``feature_store.yaml``) is rendered
from the livefeat settings by :func:`render_feature_store_yaml`; the files kept
in ``feature_repo/`` are that rendering for the default settings and for a
Redis + S3 setup, and a test holds them to it.

Typical use::

    store = apply(settings)                       # registry + online tables
    store.get_online_features([...], [{"user_id": "u1"}])
    print(render_feature_store_yaml(settings))    # for `feast` CLI users

Type mapping: int64 -> Int64, float64 -> Float64, bool -> Bool, string -> String,
timestamp -> UnixTimestamp (Feast keeps online timestamps in whole seconds).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.data_format import ParquetFormat
from feast.types import Bool, FeastType, Float64, Int64, String, UnixTimestamp

from pipelines.config import CONFIG_ENV, DEFAULT_CONFIG_NAME, Settings, load_config
from pipelines.features.definitions import FeatureView as FeatureViewDef
from pipelines.features.definitions import Pipeline
from pipelines.features.definitions import ValueType as LivefeatType
from pipelines.jobs.marketplace import PIPELINE

DEFAULT_PROJECT = "livefeat"
ENTITY_KEY_SERIALIZATION_VERSION = 3
DAY_S = 86_400.0

SQLITE_STORE = "pipelines.feast_stores.LivefeatSqliteOnlineStore"
REDIS_STORE = "pipelines.feast_stores.LivefeatRedisOnlineStore"
OFFLINE_STORE = "pipelines.feast_stores.LivefeatFileOfflineStore"

FEAST_TYPES: dict[LivefeatType, FeastType] = {
    "int64": Int64,
    "float64": Float64,
    "bool": Bool,
    "string": String,
    "timestamp": UnixTimestamp,
}


@dataclass(frozen=True)
class FeastRepo:
    """The Feast objects of one pipeline, by livefeat name.

    Attributes:
        entities: entity name (``user``) -> Feast Entity.
        sources: view name -> FileSource of its changelog.
        views: view name -> FeatureView.
    """

    entities: dict[str, Entity]
    sources: dict[str, FileSource]
    views: dict[str, FeatureView]

    def objects(self) -> list[Any]:
        """Everything to pass to ``FeatureStore.apply``."""
        return [*self.entities.values(), *self.sources.values(), *self.views.values()]


def changelog_path(offline_uri: str, view: str) -> str:
    """Where the pipeline writes the changelog of ``view`` under the offline store root."""
    return f"{offline_uri.rstrip('/')}/features/{view}"


def build_repo(
    pipeline: Pipeline = PIPELINE, offline_uri: str = ".livefeat/offline",
    s3_endpoint: str | None = None,
) -> FeastRepo:
    """Feast entities, sources and views for every view of ``pipeline``.

    Args:
        pipeline: the definitions.
        offline_uri: offline store root (directory or ``s3://bucket/prefix``).
        s3_endpoint: S3 endpoint URL for ``s3://`` roots (None: AWS).
    """
    entities: dict[str, Entity] = {}
    sources: dict[str, FileSource] = {}
    views: dict[str, FeatureView] = {}
    endpoint = s3_endpoint if offline_uri.startswith("s3://") else None
    for view in pipeline.views:
        ent = view.entity
        if ent.name not in entities:
            entities[ent.name] = Entity(
                name=ent.name, join_keys=[ent.join_key], value_type=ValueType.STRING,
                description=ent.description,
            )
        source = FileSource(
            name=f"{view.name}_changelog",
            path=changelog_path(offline_uri, view.name),
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
            file_format=ParquetFormat(),
            s3_endpoint_override=endpoint,
            description=f"Changelog of {view.name} written by the {pipeline.name} pipeline.",
        )
        sources[view.name] = source
        schema = [Field(name=ent.join_key, dtype=String)]
        schema += [
            Field(name=f.name, dtype=FEAST_TYPES[f.value_type], description=f.description)
            for f in view.features
        ]
        views[view.name] = FeatureView(
            name=view.name,
            entities=[entities[ent.name]],
            # The latest changelog row at or before t is the value at t, however old
            # it is (a profile can stay unchanged for months): no lookback limit.
            ttl=timedelta(0),
            schema=schema,
            source=source,
            online=True,
            description=view.description,
            tags={"pipeline": pipeline.name},
        )
    return FeastRepo(entities, sources, views)


# -- settings -> Feast -------------------------------------------------------------------


def _absolute(path: Path, base_dir: Path | None) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base_dir or Path.cwd()) / path


def registry_path(settings: Settings, base_dir: Path | None = None) -> Path:
    """The Feast registry file: ``online_store.registry_path`` if the settings have one,
    else ``registry.db`` beside the SQLite online store file (``.livefeat/registry.db``)."""
    configured = getattr(settings.online_store, "registry_path", None)
    path = Path(configured) if configured else settings.online_store.sqlite_path.parent / (
        "registry.db"
    )
    return _absolute(path, base_dir)


def project_name(settings: Settings) -> str:
    """The Feast project (``online_store.project`` if the settings have one)."""
    return str(getattr(settings.online_store, "project", None) or DEFAULT_PROJECT)


def offline_root(settings: Settings, base_dir: Path | None = None) -> str:
    """``offline_store.uri`` with a local directory made absolute."""
    uri = settings.offline_store.uri
    if uri.startswith("s3://"):
        return uri.rstrip("/")
    return str(_absolute(Path(uri), base_dir))


def repo_for_settings(
    settings: Settings, pipeline: Pipeline = PIPELINE, base_dir: Path | None = None
) -> FeastRepo:
    """:func:`build_repo` for the offline store the settings name."""
    return build_repo(pipeline, offline_root(settings, base_dir), settings.s3.endpoint_url)


def _online_store(settings: Settings, base_dir: Path | None, relative_to: Path | None
                  ) -> dict[str, Any]:
    online = settings.online_store
    if online.type == "redis":
        return {"type": REDIS_STORE, "connection_string": online.redis_connection_string}
    path = _absolute(online.sqlite_path, base_dir)
    return {"type": SQLITE_STORE, "path": _rel(path, relative_to)}


def _rel(path: Path, relative_to: Path | None) -> str:
    return os.path.relpath(path, relative_to) if relative_to else str(path)


def feature_store_dict(
    settings: Settings, *, project: str | None = None, base_dir: Path | None = None,
    relative_to: Path | None = None,
) -> dict[str, Any]:
    """The content of ``feature_store.yaml`` for ``settings``.

    Args:
        settings: livefeat settings (online store, registry).
        project: Feast project (default :func:`project_name`).
        base_dir: directory relative settings paths are relative to (default: cwd).
        relative_to: write file paths relative to this directory (the Feast repo).
    """
    return {
        "project": project or project_name(settings),
        "provider": "local",
        "registry": _rel(registry_path(settings, base_dir), relative_to),
        "online_store": _online_store(settings, base_dir, relative_to),
        "offline_store": {"type": OFFLINE_STORE},
        "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION,
    }


def render_feature_store_yaml(
    settings: Settings, *, project: str | None = None, base_dir: Path | None = None,
    relative_to: Path | None = None,
) -> str:
    """``feature_store.yaml`` text for ``settings`` (see :func:`feature_store_dict`)."""
    header = (
        "# Generated by `livefeat features config` from the livefeat settings; do not edit.\n"
        "# Feature views, entities and sources come from livefeat_repo.py (the pipeline\n"
        "# definitions); the offline data location from the livefeat settings.\n"
    )
    body = feature_store_dict(settings, project=project, base_dir=base_dir,
                              relative_to=relative_to)
    return header + yaml.safe_dump(body, sort_keys=False)


def repo_config(
    settings: Settings, *, project: str | None = None, base_dir: Path | None = None
) -> RepoConfig:
    """A Feast RepoConfig for ``settings`` (absolute paths)."""
    body = feature_store_dict(settings, project=project, base_dir=base_dir)
    return RepoConfig(repo_path=base_dir or Path.cwd(), **body)


def feature_store(
    settings: Settings, *, project: str | None = None, base_dir: Path | None = None
) -> FeatureStore:
    """A FeatureStore for ``settings`` (no file on disk needed)."""
    return FeatureStore(config=repo_config(settings, project=project, base_dir=base_dir))


def apply(
    settings: Settings, pipeline: Pipeline = PIPELINE, *, project: str | None = None,
    base_dir: Path | None = None,
) -> FeatureStore:
    """Register the pipeline's Feast objects and create the online tables (idempotent)."""
    store = feature_store(settings, project=project, base_dir=base_dir)
    store.apply(repo_for_settings(settings, pipeline, base_dir).objects())
    return store


def ensure_applied(
    store: FeatureStore, settings: Settings, pipeline: Pipeline = PIPELINE,
    base_dir: Path | None = None,
) -> bool:
    """Apply the pipeline's objects unless every view is already registered; True if applied."""
    known = {fv.name for fv in store.list_feature_views()}
    if all(v.name in known for v in pipeline.views):
        return False
    store.apply(repo_for_settings(settings, pipeline, base_dir).objects())
    return True


# -- the feature_repo/ directory ---------------------------------------------------------


def settings_for_feature_repo(repo_dir: Path) -> Settings:
    """Settings the Feast repository at ``repo_dir`` reads its offline location from.

    ``$LIVEFEAT_CONFIG`` if set, else ``livefeat.yaml`` in the project root (the
    repository's parent directory), else the defaults. The Feast CLI changes into the
    repository before it imports it, so a relative ``$LIVEFEAT_CONFIG`` that does not
    exist from there is looked up from the project root.
    """
    env = os.environ.get(CONFIG_ENV)
    if env:
        path = Path(env)
        from_root = repo_dir.resolve().parent / path
        if not path.is_absolute() and not path.exists() and from_root.exists():
            path = from_root
        return load_config(path)
    candidate = repo_dir.parent / DEFAULT_CONFIG_NAME
    return load_config(candidate) if candidate.is_file() else Settings()


def repo_for_feature_repo(repo_dir: Path, pipeline: Pipeline = PIPELINE) -> FeastRepo:
    """The objects ``feature_repo/livefeat_repo.py`` declares. Relative paths in the settings
    are relative to the project root (the repository's parent directory), where
    ``livefeat`` commands run."""
    root = repo_dir.resolve().parent
    return repo_for_settings(settings_for_feature_repo(repo_dir), pipeline, base_dir=root)


def describe(repo_views: list[FeatureView], entities: list[Entity]) -> dict[str, Any]:
    """A plain summary of Feast views and entities, to compare two repositories."""
    return {
        # Feast's parser adds a placeholder entity for views without one: not ours
        "entities": sorted((e.name, e.join_key) for e in entities if e.name != "__dummy"),
        "views": {
            fv.name: {
                "entities": sorted(fv.entities),
                "features": [(f.name, str(f.dtype)) for f in fv.features],
                "path": fv.batch_source.path if isinstance(fv.batch_source, FileSource) else None,
                "timestamp_field": fv.batch_source.timestamp_field if fv.batch_source else None,
                "created_timestamp_column": (
                    fv.batch_source.created_timestamp_column if fv.batch_source else None
                ),
                "ttl_s": fv.ttl.total_seconds() if fv.ttl is not None else None,
            }
            for fv in sorted(repo_views, key=lambda v: v.name)
        },
    }


# -- read-time features ------------------------------------------------------------------


def read_time_values(
    pipeline: Pipeline, view: str, stored: dict[str, Any], at_s: float
) -> dict[str, float | None]:
    """Features computed at read time from stored ones: days from the stored timestamp to
    ``at_s`` (epoch seconds) as a float, None when the stored timestamp is null.

    ``stored`` maps feature names to values: datetimes, or epoch seconds as numbers.

    >>> from datetime import datetime, UTC
    >>> created = datetime(2024, 1, 1, tzinfo=UTC)
    >>> read_time_values(PIPELINE, "user_features", {"user_account_created_at": created},
    ...                  created.timestamp() + 1.5 * 86400)
    {'user_account_age_days': 1.5}
    """
    out: dict[str, float | None] = {}
    for view_name, name, source in pipeline.read_time_features:
        if view_name != view:
            continue
        value = stored.get(source)
        if value is None:
            out[name] = None
            continue
        seconds = value.timestamp() if hasattr(value, "timestamp") else float(value)
        out[name] = (at_s - seconds) / DAY_S
    return out


# -- online reads ------------------------------------------------------------------------


@dataclass(frozen=True)
class OnlineValues:
    """One entity's values as Feast's online store returns them.

    Attributes:
        key: the entity key value.
        found: False when the store has no row for the entity (never seen by the pipeline:
            its values are the empty values, counts 0 and others null).
        values: feature name -> value (timestamps as UTC datetimes), plus read-time features.
        event_time_ms: when the values became true (epoch ms), None if not found.
    """

    key: str
    found: bool
    values: dict[str, Any]
    event_time_ms: int | None


def read_online(
    store: FeatureStore, view: FeatureViewDef, keys: list[str], *,
    pipeline: Pipeline = PIPELINE, now_s: float | None = None,
) -> list[OnlineValues]:
    """Every feature of ``view`` for each key through ``get_online_features``, with the
    event time of the values and the view's read-time features as of ``now_s``."""
    import time

    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    now = time.time() if now_s is None else now_s
    join_key = view.entity.join_key
    response = store.get_online_features(
        features=[f"{view.name}:{n}" for n in view.feature_names],
        entity_rows=[{join_key: k} for k in keys],
    )
    names = list(response.proto.metadata.feature_names.val)
    columns = response.to_dict()
    out = []
    for i, key in enumerate(keys):
        stamps = []
        found = False
        for j, name in enumerate(names):
            if name == join_key:
                continue
            vector = response.proto.results[j]
            stamp = vector.event_timestamps[i].ToMilliseconds()
            # Redis answers an unknown entity with null values at time 0, not NOT_FOUND
            if vector.statuses[i] != FieldStatus.NOT_FOUND and stamp != 0:
                found = True
                stamps.append(stamp)
        values = {n: columns[n][i] for n in view.feature_names}
        values.update(read_time_values(pipeline, view.name, values, now))
        out.append(OnlineValues(key, found, values, max(stamps) if stamps else None))
    return out
