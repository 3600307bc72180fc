"""Typed, validated configuration.

Settings come from a YAML file (``livefeat.yaml`` in the working directory, or
the file named by ``LIVEFEAT_CONFIG`` / ``--config``). Every key has a default
that runs the embedded stack on one machine, so the file is optional. Invalid
files fail at start with a :class:`~pipelines.errors.ConfigError` naming the
file, the key and the fix.

Environment is read when :func:`load_config` is called, never at import time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from pipelines.errors import ConfigError
from quality.config import GateConfig

DEFAULT_CONFIG_NAME = "livefeat.yaml"
CONFIG_ENV = "LIVEFEAT_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    """Where the Kafka-protocol broker is and how topics are laid out."""

    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = Field(default=4, ge=1, le=1024)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{part!r} is not host:port; write e.g. 127.0.0.1:9092")
        return value


class StackSettings(_Section):
    """The embedded stack started by ``livefeat stack up``."""

    state_dir: Path = Path(".livefeat")
    broker_port: int = Field(default=9092, ge=1, le=65535)
    s3_port: int = Field(default=9000, ge=1, le=65535)
    broker_storage: Literal["memory", "s3"] = "memory"
    broker_storage_bucket: str = "livefeat-broker"


class S3Settings(_Section):
    """An S3 endpoint. ``endpoint_url`` None means AWS itself (credentials from the AWS chain)."""

    endpoint_url: str | None = "http://127.0.0.1:9000"
    bucket: str = "livefeat-offline"
    region: str = "us-east-1"


CHECKPOINT_SCHEMES = frozenset(
    {"file", "s3", "s3a", "s3p", "hdfs", "viewfs", "gs", "abfs", "abfss", "wasb", "wasbs", "oss"}
)
"""URI schemes ``flink.checkpoint_dir`` accepts: Flink's file systems (each but ``file``
needs its plugin on the cluster, e.g. ``flink-s3-fs-presto`` for ``s3://``)."""

_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


class FlinkSettings(_Section):
    """How the streaming job runs.

    ``checkpoint_dir`` is a local directory (a path, made absolute when a job is
    built) or a URI that every Flink process can reach, kept exactly as written:
    ``s3://bucket/prefix`` on Kubernetes, ``file:///shared/dir``, ``hdfs://...``.

    >>> FlinkSettings(checkpoint_dir="s3://livefeat-flink/ckpt").checkpoint_dir
    's3://livefeat-flink/ckpt'
    >>> FlinkSettings(checkpoint_dir="ckpt").checkpoint_dir
    PosixPath('ckpt')
    """

    parallelism: int = Field(default=1, ge=1, le=512)
    execution_mode: Literal["thread", "process"] = "thread"
    checkpoint_interval_ms: int = Field(default=10_000, ge=0)
    checkpoint_dir: Path | str = Path(".livefeat/checkpoints")
    out_of_orderness_ms: int = Field(default=5_000, ge=0)
    idleness_ms: int = Field(default=30_000, ge=0)

    @field_validator("checkpoint_dir", mode="before")
    @classmethod
    def _path_or_uri(cls, value: object) -> object:
        if not isinstance(value, str):
            return value  # a Path (or something pydantic rejects with its own message)
        match = _URI_SCHEME.match(value)
        if match is None:
            return Path(value)
        scheme = match.group(1).lower()
        if scheme not in CHECKPOINT_SCHEMES:
            raise ValueError(
                f"{value!r} has URI scheme {scheme!r}, which is not a Flink file system; use a "
                f"local path or one of {', '.join(sorted(CHECKPOINT_SCHEMES))}"
            )
        if scheme != "file" and not re.match(r"^[^:]+://[^/]+", value):
            raise ValueError(f"{value!r} names no bucket or host; write e.g. {scheme}://bucket/dir")
        return value


class OfflineStoreSettings(_Section):
    """Where Parquet goes: a local directory or an ``s3://bucket/prefix`` URI."""

    uri: str = ".livefeat/offline"
    retry_give_up_s: float = Field(default=300.0, gt=0)


class OnlineStoreSettings(_Section):
    """Feast online store: embedded SQLite or Redis."""

    enabled: bool = True
    type: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: Path = Path(".livefeat/online.db")
    redis_connection_string: str = "127.0.0.1:6379"
    project: str = "livefeat"
    registry_path: Path | None = None  # default: registry.db next to the SQLite file
    retry_give_up_s: float = Field(default=300.0, gt=0)


class SchemaSettings(_Section):
    """Which Avro schema versions the pipeline knows and reads with.

    ``dir`` holds ``<subject>/v<N>.avsc`` files (default: the shipped ``schemas/avro``);
    every version kept there can be decoded. ``reader_versions`` pins the version a
    subject is read *as* (default: its newest), so a running pipeline keeps its shape
    while producers move to a newer, compatible writer version.
    """

    dir: Path | None = None
    reader_versions: dict[str, int] = Field(default_factory=dict)


class QualitySettings(GateConfig):
    """The quality gate in the stream: a :class:`~quality.config.GateConfig` plus where it runs.

    Every key of ``GateConfig`` is valid here (``drift_threshold``, ``action``,
    ``views``, ``min_rows``, ``batch_max_rows``, ``batch_max_ms``, ``currencies``,
    ``max_future_ms``, ``results_dir``); see docs/quality.md.

    Attributes:
        enabled: run the gate in the streaming job, inside the offline sink (default on).
        dir: a directory with ``suites/`` and ``profiles/`` (default: the ones shipped
            in the ``quality`` package).

    ``results_dir`` left unset means ``<stack.state_dir>/quality``: the results are a
    local directory (held batches wait there for ``livefeat quality release``), so they
    live with the stack's other local state, also when the offline store is on S3.

    >>> QualitySettings().gate_config(Path("/srv/state")).results_dir
    PosixPath('/srv/state/quality')
    >>> QualitySettings(results_dir=Path("/data/q")).results_in(Path("/srv/state"))
    PosixPath('/data/q')
    """

    enabled: bool = True
    dir: Path | None = None

    @field_validator("dir")
    @classmethod
    def _has_suites(cls, value: Path | None) -> Path | None:
        if value is not None and not (value / "suites").is_dir():
            raise ValueError(
                f"{value} has no suites/ directory; copy the shipped quality/suites (and "
                "quality/profiles) there, or remove `dir` to use the shipped ones"
            )
        return value

    def results_in(self, state_dir: Path) -> Path:
        """The results directory, absolute: ``results_dir`` if set, else ``<state_dir>/quality``."""
        chosen = self.results_dir if self.results_dir is not None else Path(state_dir) / "quality"
        return Path(chosen).absolute()

    def quality_dir(self) -> Path | None:
        """The suites and profiles directory, absolute (None: the shipped ones)."""
        return None if self.dir is None else self.dir.absolute()

    def gate_config(self, state_dir: Path) -> GateConfig:
        """The plain :class:`GateConfig` the gate is built with, ``results_dir`` resolved."""
        values = {name: getattr(self, name) for name in GateConfig.model_fields}
        values["results_dir"] = self.results_in(state_dir)
        return GateConfig.model_validate(values)


class Settings(_Section):
    """All settings. Build with :func:`load_config`."""

    kafka: KafkaSettings = KafkaSettings()
    stack: StackSettings = StackSettings()
    s3: S3Settings = S3Settings()
    flink: FlinkSettings = FlinkSettings()
    offline_store: OfflineStoreSettings = OfflineStoreSettings()
    online_store: OnlineStoreSettings = OnlineStoreSettings()
    schemas: SchemaSettings = SchemaSettings()
    quality: QualitySettings = QualitySettings()
    source_file: Path | None = Field(default=None, exclude=True)


def _fix_for(error_type: str, loc: str) -> str:
    if error_type == "extra_forbidden":
        return f"remove or rename `{loc}`; see docs/configuration.md for the valid keys"
    if error_type.startswith("literal_error"):
        return f"set `{loc}` to one of the values listed above"
    if loc.startswith("quality."):
        return f"correct `{loc}` (see docs/quality.md, Configuration)"
    return f"correct `{loc}` (see docs/configuration.md)"


def load_config(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load and validate settings.

    Args:
        path: a YAML file. ``None`` means ``$LIVEFEAT_CONFIG`` if set, else
            ``./livefeat.yaml`` if it exists, else the built-in defaults.

    Raises:
        ConfigError: the file is missing, not YAML, or a key is invalid.
    """
    if path is None:
        env = os.environ.get(CONFIG_ENV)
        if env:
            path = env
        elif Path(DEFAULT_CONFIG_NAME).exists():
            path = DEFAULT_CONFIG_NAME
    if path is None:
        return Settings()
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            "configuration file not found",
            where=str(file),
            fix=f"create it, point {CONFIG_ENV} at an existing file, or unset it to use defaults",
        )
    try:
        raw: Any = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"not valid YAML: {exc}", where=str(file), fix="fix the YAML syntax"
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            "top level must be a mapping of sections",
            where=str(file),
            fix="see docs/configuration.md",
        )
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            first["msg"], where=f"{file}, key {loc}", fix=_fix_for(first["type"], loc)
        ) from exc
    return settings.model_copy(update={"source_file": file})
