"""Session-scoped real services for integration tests, on free ports, stopped by process id.

``stack_settings`` brings up the embedded stack (Tansu broker with memory
storage, moto's S3 server) through :class:`pipelines.stack.StackManager` in a
temporary state directory, with the reference topics and the offline-store
bucket created, and yields settings that point at it. Local paths in those
settings (offline store, online SQLite file, checkpoints) point into the same
temporary directory, so no test writes into the working tree.

``cluster_dir`` is a real local Flink session cluster shared by the session
(see :mod:`tests.integration.flink_cluster`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipelines.config import Settings
from pipelines.stack import StackManager, override_stack
from tests.conftest import free_port
from tests.integration.flink_cluster import cluster_dir, flink_cluster_state

__all__ = ["cluster_dir", "flink_cluster_state"]  # fixtures shared by the Flink cluster tests


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a fresh embedded stack (broker + S3) for this test session."""
    root = tmp_path_factory.mktemp("stack")
    base = Settings()
    base = base.model_copy(update={
        "flink": base.flink.model_copy(update={"checkpoint_dir": root / "checkpoints"}),
        "offline_store": base.offline_store.model_copy(update={"uri": str(root / "offline")}),
        "online_store": base.online_store.model_copy(update={"sqlite_path": root / "online.db"}),
    })
    base = override_stack(base, broker_port=free_port(), s3_port=free_port(),
                          state_dir=root / "state")
    manager = StackManager(base)
    try:
        endpoints = manager.up()
        yield endpoints.apply(base)
    finally:
        manager.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_settings: Settings) -> str:
    """bootstrap_servers of the session's broker (memory storage, reference topics created)."""
    return stack_settings.kafka.bootstrap_servers
