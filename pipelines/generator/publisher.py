"""Publishing generated records to Kafka with kafka-python.

``acks=all``, batching for throughput, one request in flight per connection so
a partition's records land in publish order even when a batch is retried, and
an explicit partition per record (the one the generator chose). Every send's
future is checked, in order: the acknowledged ones whenever 20,000 are pending,
all of them after the final flush; the first failure stops the run with a
:class:`SinkError` naming the record. Nothing is dropped silently.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import SinkError, StackError
from pipelines.generator.options import GeneratedRecord

_STACK_FIX = "start the embedded stack with `livefeat stack up`, or pass --bootstrap-servers"


@dataclass
class Delivery:
    """Where one record landed."""

    seq: int
    topic: str
    partition: int
    offset: int


@dataclass
class PublishStats:
    """What a publish run did."""

    records: int = 0
    elapsed_s: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)
    """Broker-assigned offsets of the records the caller asked to track."""
    offset_ranges: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    """topic -> partition -> [first offset, last offset] written in this run."""

    @property
    def records_per_s(self) -> float:
        """Throughput over the whole run, flush included."""
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0


class KafkaPublisher:
    """A kafka-python producer tuned for the generator.

    Args:
        config: kafka-python connection settings (see ``kafka_python_config`` in
            :mod:`pipelines.sources.offsets`).
        linger_ms: how long a batch waits to fill.
        batch_size: bytes per partition batch.
        delivery_timeout_ms: how long a record may take to be acknowledged, retries
            included, before the run fails.
    """

    def __init__(self, config: dict[str, Any], *, linger_ms: int = 50,
                 batch_size: int = 1_048_576, delivery_timeout_ms: int = 120_000) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self._servers = ",".join(config["bootstrap_servers"])
        try:
            self._producer = KafkaProducer(
                acks="all", linger_ms=linger_ms, batch_size=batch_size,
                max_in_flight_requests_per_connection=1, retries=5, max_block_ms=30_000,
                delivery_timeout_ms=delivery_timeout_ms,
                request_timeout_ms=min(30_000, max(1, (delivery_timeout_ms - linger_ms) // 2)),
                client_id="livefeat-generate", **config,
            )
        except KafkaError as exc:
            raise StackError(f"cannot reach the Kafka broker ({exc})",
                             where=f"bootstrap servers {self._servers}", fix=_STACK_FIX) from exc

    def partition_counts(self, topics: Iterable[str]) -> dict[str, int]:
        """Partition count of each topic, from the broker's metadata.

        Raises:
            StackError: a topic does not exist (and the broker did not create it).
        """
        from kafka.errors import KafkaError

        counts = {}
        for topic in topics:
            try:
                parts = self._producer.partitions_for(topic)
            except KafkaError as exc:
                raise StackError(
                    f"no metadata for the topic ({exc})",
                    where=f"topic {topic} on {self._servers}",
                    fix="run `livefeat stack up` (creates the reference topics) or create it",
                ) from exc
            if not parts:
                raise StackError(
                    "topic does not exist", where=f"topic {topic} on {self._servers}",
                    fix="run `livefeat stack up` (creates the reference topics) or create it",
                )
            counts[topic] = len(parts)
        return counts

    def publish(
        self,
        records: Iterable[GeneratedRecord],
        *,
        track: Callable[[GeneratedRecord], bool] = lambda r: False,
        rate: float = 0.0,
        progress: Callable[[GeneratedRecord], None] | None = None,
    ) -> PublishStats:
        """Send every record, in order, then flush.

        Args:
            records: the publish sequence.
            track: records whose offsets to report in ``deliveries``.
            rate: records per second of wall clock; 0 means as fast as possible.
            progress: called after each record is handed to the producer.

        Raises:
            SinkError: the broker rejected or failed to acknowledge a record.
        """
        from kafka.errors import KafkaError

        stats = PublishStats()
        send = self._producer.send
        tracked: list[tuple[int, Any]] = []
        first: dict[tuple[str, int], Any] = {}
        last: dict[tuple[str, int], Any] = {}
        pending: deque[tuple[int, Any]] = deque()  # (seq, future) not yet seen acknowledged
        started = time.monotonic()
        for rec in records:
            try:
                future = send(rec.topic, value=rec.value, key=rec.key, partition=rec.partition,
                              timestamp_ms=rec.timestamp_ms)
            except (KafkaError, ValueError) as exc:
                raise SinkError(
                    f"could not send record #{rec.seq} to {rec.topic}[{rec.partition}] "
                    f"({type(exc).__name__}: {exc}); publishing stopped",
                    where=f"bootstrap servers {self._servers}",
                    fix="check the broker (`livefeat stack status`) and the topics' partitions",
                ) from exc
            pending.append((rec.seq, future))
            where = (rec.topic, rec.partition)
            if where not in first:
                first[where] = future
            last[where] = future
            if track(rec):
                tracked.append((rec.seq, future))
            stats.records += 1
            if progress is not None:
                progress(rec)
            if rate > 0:
                ahead = stats.records / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if len(pending) >= 20_000:  # fail early, and forget acknowledged sends
                self._check(pending, done_only=True)
        self._producer.flush()
        stats.elapsed_s = time.monotonic() - started
        self._check(pending, done_only=False)
        for where, future in first.items():
            stats.offset_ranges.setdefault(where[0], {})[where[1]] = [
                future.value.offset, last[where].value.offset]
        for seq, future in tracked:
            meta = future.value
            stats.deliveries.append(Delivery(seq, meta.topic, meta.partition, meta.offset))
        return stats

    def _check(self, pending: deque[tuple[int, Any]], *, done_only: bool) -> None:
        """Drop acknowledged sends from the left of ``pending``; raise on the first failure."""
        while pending:
            seq, future = pending[0]
            if not future.is_done:
                if done_only:
                    return
                raise SinkError(f"record #{seq} was never acknowledged",
                                where=f"bootstrap servers {self._servers}",
                                fix="check the broker and run the generator again")
            if future.failed():
                exc = future.exception
                raise SinkError(
                    f"the broker did not take record #{seq} "
                    f"({type(exc).__name__}: {exc}); publishing stopped",
                    where=f"bootstrap servers {self._servers}",
                    fix="check the broker (`livefeat stack status`) and run the generator again",
                ) from exc
            pending.popleft()

    def close(self, timeout_s: float = 10.0) -> None:
        """Close the producer, waiting at most ``timeout_s`` for outstanding sends.

        Sends still unacknowledged after that (only after a failed run: a successful
        :meth:`publish` has flushed) are abandoned, so closing never hangs or raises.
        """
        from kafka.errors import KafkaError

        try:
            self._producer.close(timeout=timeout_s)
        except KafkaError:
            # kafka-python has no public abort: stop its I/O thread, which fails the
            # pending batches, then close again with nothing left to wait for.
            sender = getattr(self._producer, "_sender", None)
            if sender is not None:
                sender.force_close()
            with contextlib.suppress(KafkaError):
                self._producer.close(timeout=timeout_s)
