"""The source contract.

A source turns a topic (or another origin) into a Flink ``DataStream`` of raw
records, one :data:`RAW_RECORD` row per input record, and nothing else: no
decoding, no filtering. Every record read is emitted exactly once per run
(after a restore from a checkpoint, reading resumes after the last record the
checkpoint covers).

Each record carries its event time twice: in the ``timestamp`` field and as
the Flink record timestamp (``ctx.timestamp()``). The stream carries
watermarks derived from those timestamps; steps after a source never assign
timestamps or watermarks themselves.

A bounded source stops at an end fixed when the job is built, so a bounded run
reads exactly what the input held then.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyflink.common import Row, Types

from pipelines.errors import DefinitionError

if TYPE_CHECKING:
    from pyflink.datastream import DataStream, StreamExecutionEnvironment

RAW_RECORD_FIELDS = ("topic", "partition", "offset", "timestamp", "key", "value")
"""Field order of a raw record; downstream steps may unpack it positionally."""

RAW_RECORD = Types.ROW_NAMED(
    list(RAW_RECORD_FIELDS),
    [
        Types.STRING(),  # topic
        Types.INT(),  # partition
        Types.LONG(),  # offset
        Types.LONG(),  # timestamp: event time, epoch milliseconds (the Kafka record timestamp)
        Types.PRIMITIVE_ARRAY(Types.BYTE()),  # key, None when the record has no key
        Types.PRIMITIVE_ARRAY(Types.BYTE()),  # value, None for a tombstone
    ],
)
"""Flink type of a raw record."""

RawRecordRow = Row(*RAW_RECORD_FIELDS)
"""Row factory: ``RawRecordRow(topic, partition, offset, timestamp, key, value)``."""


class Source(ABC):
    """Something that adds a stream of raw records to a job."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The step name, unique in the job; also used as the operator name and uid."""

    @abstractmethod
    def build(self, env: StreamExecutionEnvironment) -> DataStream:
        """Add the source to ``env`` and return its stream of :data:`RAW_RECORD` rows."""


def build_all(env: StreamExecutionEnvironment, sources: Sequence[Source]) -> DataStream:
    """Build every source and union their streams into one.

    The union's watermark is the minimum of the sources' watermarks.

    Raises:
        DefinitionError: no sources, or two sources share a step name.
    """
    names = [s.name for s in sources]
    if not names:
        raise DefinitionError("a job needs at least one source")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DefinitionError(
            f"step names must be unique; used more than once: {', '.join(duplicates)}",
            fix="give each source its own step name",
        )
    first, *rest = [s.build(env) for s in sources]
    return first.union(*rest) if rest else first
