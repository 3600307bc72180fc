"""Reading topics from the beginning to their true end, and counting records by decode outcome.

The end of a partition is taken from the high watermark a *fetch* reports
(``KafkaConsumer.highwater`` after polling), never from ListOffsets "latest",
which the embedded Tansu broker answers with a too-small offset.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import CodecError, StackError
from schemas.codec import SingleObjectCodec

OK = "ok"


@dataclass
class TopicReport:
    """What one topic held, by decode outcome."""

    topic: str
    subject: str
    partitions: int = 0
    """Partition count; 0 when the topic does not exist."""
    end_offsets: dict[int, int] = field(default_factory=dict)
    records: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"topic": self.topic, "subject": self.subject, "partitions": self.partitions,
                "records": self.records,
                "end_offsets": {str(p): o for p, o in sorted(self.end_offsets.items())},
                "outcomes": dict(sorted(self.outcomes.items())), "samples": self.samples}


def read_to_end(config: dict[str, Any], topics: Sequence[str], *, timeout_s: float = 60.0,
                partitions: dict[str, int] | None = None) -> Iterator[Any]:
    """Every record of ``topics``, from the beginning to the end each partition had when read.

    Yields kafka-python ``ConsumerRecord`` objects. Missing topics yield nothing.
    ``partitions``, when given, receives the partition count of each topic found.

    Raises:
        StackError: the broker is unreachable, or the end was not reached in ``timeout_s``.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    servers = ",".join(config["bootstrap_servers"])
    try:
        consumer = KafkaConsumer(group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="earliest", client_id="livefeat-tail",
                                 max_partition_fetch_bytes=4_194_304, **config)
    except KafkaError as exc:
        raise StackError(f"cannot reach the Kafka broker ({exc})",
                         where=f"bootstrap servers {servers}",
                         fix="start the stack with `livefeat stack up`, "
                             "or pass --bootstrap-servers") from exc
    try:
        tps = [TopicPartition(t, p) for t in topics
               for p in sorted(consumer.partitions_for_topic(t))]
        if partitions is not None:
            for tp in tps:
                partitions[tp.topic] = partitions.get(tp.topic, 0) + 1
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while True:
            batch = consumer.poll(timeout_ms=200, max_records=20_000)
            for records in batch.values():
                yield from records
            pending = [tp for tp in tps
                       if consumer.highwater(tp) is None
                       or consumer.position(tp) < consumer.highwater(tp)]
            if not pending and not batch:
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"did not reach the end of {len(pending)} partition(s) in {timeout_s:g} s",
                    where=", ".join(f"{tp.topic}[{tp.partition}]" for tp in pending[:5]),
                    fix="check the broker, or raise --timeout",
                )
    finally:
        consumer.close()


def tail_topics(config: dict[str, Any], codec: SingleObjectCodec, subjects: Sequence[str], *,
                prefix: str = "", samples: int = 2, timeout_s: float = 60.0) -> list[TopicReport]:
    """Read the topics of ``subjects`` to their end and count records per decode outcome.

    Outcomes are ``ok`` or a codec reason (``undecodable``, ``unknown_fingerprint``,
    ``incompatible_writer``). The first ``samples`` decoded records of each topic
    are kept.
    """
    reports = {prefix + s: TopicReport(prefix + s, s) for s in subjects}
    decoders = {prefix + s: codec.decoder(s) for s in subjects}
    found: dict[str, int] = {}
    for rec in read_to_end(config, list(reports), timeout_s=timeout_s, partitions=found):
        report = reports[rec.topic]
        report.records += 1
        end = report.end_offsets.get(rec.partition, 0)
        report.end_offsets[rec.partition] = max(end, rec.offset + 1)
        try:
            value = decoders[rec.topic].decode(rec.value or b"", topic=rec.topic,
                                               partition=rec.partition, offset=rec.offset)
        except CodecError as exc:
            outcome = exc.reason
        else:
            outcome = OK
            if len(report.samples) < samples:
                report.samples.append({"partition": rec.partition, "offset": rec.offset,
                                       "timestamp_ms": rec.timestamp, "value": value})
        report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
    for topic, count in found.items():
        reports[topic].partitions = count
    return list(reports.values())
