"""The sink contract.

A sink receives batches of rows for a named dataset and makes them durable.
``write`` returns only when the batch is durable (or raises
:class:`~pipelines.errors.SinkError` after its own retries), so the caller
may forget the rows. Sinks are at-least-once: after a restart, a replay may
write rows again, so readers deduplicate (see docs/semantics.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import pyarrow as pa


class Sink(ABC):
    """Where batches of rows go."""

    @abstractmethod
    def write(self, dataset: str, schema: pa.Schema, rows: Sequence[dict[str, Any]]) -> int:
        """Make ``rows`` of ``dataset`` durable; returns the number of rows written."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Default: nothing to do."""
