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
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from pipelines.errors import ConfigError

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


class FlinkSettings(_Section):
    """How the streaming job runs."""

    parallelism: int = Field(default=1, ge=1, le=512)
    execution_mode: Literal["thread", "process"] = "thread"
    checkpoint_interval_ms: int = Field(default=10_000, ge=0)
    checkpoint_dir: Path = Path(".livefeat/checkpoints")
    out_of_orderness_ms: int = Field(default=5_000, ge=0)
    idleness_ms: int = Field(default=30_000, ge=0)


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


class Settings(_Section):
    """All settings. Build with :func:`load_config`."""

    kafka: KafkaSettings = KafkaSettings()
    stack: StackSettings = StackSettings()
    s3: S3Settings = S3Settings()
    flink: FlinkSettings = FlinkSettings()
    offline_store: OfflineStoreSettings = OfflineStoreSettings()
    online_store: OnlineStoreSettings = OnlineStoreSettings()
    schemas: SchemaSettings = SchemaSettings()
    source_file: Path | None = Field(default=None, exclude=True)


def _fix_for(error_type: str, loc: str) -> str:
    if error_type == "extra_forbidden":
        return f"remove or rename `{loc}`; see docs/configuration.md for the valid keys"
    if error_type.startswith("literal_error"):
        return f"set `{loc}` to one of the values listed above"
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
