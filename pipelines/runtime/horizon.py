"""The final watermark of a bounded run: the largest record timestamp up to the end offsets.

A bounded run processes what the topics hold now. Its final watermark is the
largest Kafka record timestamp it reads (the record timestamp is the event
time), so the online store ends at "as of the last event", and no decay row is
written for a time the input never reached. Flink itself advances the
watermark to +infinity when bounded input ends; the views step ignores timers
past this horizon.

The scan reads record metadata only (no Avro decoding): about a second per
100k records, overlapped with the Flink job's start-up by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from pipelines.errors import StackError

_MAX_IDLE_POLLS = 15


def max_timestamp(end_offsets: Mapping[tuple[str, int], int], **consumer_config: Any) -> int | None:
    """Largest record timestamp in ``[0, end)`` of every (topic, partition); None if empty.

    ``consumer_config`` are kafka-python consumer options, ``bootstrap_servers`` included
    (see :func:`pipelines.sources.offsets.kafka_python_config`).
    """
    wanted = {TopicPartition(t, p): end for (t, p), end in end_offsets.items() if end > 0}
    if not wanted:
        return None
    consumer_config = {**consumer_config, "enable_auto_commit": False, "group_id": None}
    consumer = KafkaConsumer(**consumer_config)
    try:
        consumer.assign(list(wanted))
        consumer.seek_to_beginning(*wanted)
        best: int | None = None
        remaining = dict(wanted)
        idle = 0
        while remaining:
            batch = consumer.poll(timeout_ms=1000, max_records=50_000)
            if not batch:
                # nothing arrived: a partition may be done (e.g. trailing offsets compacted away)
                for tp in list(remaining):
                    if consumer.position(tp) >= remaining[tp]:
                        del remaining[tp]
                idle += 1
                if remaining and idle >= _MAX_IDLE_POLLS:
                    missing = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in remaining)
                    raise StackError(
                        f"no records arrive from {missing} although the end offsets say more exist",
                        where=f"broker {consumer_config.get('bootstrap_servers')}",
                        fix="check that the broker is up (`livefeat stack status`) and retry",
                    )
                continue
            idle = 0
            for tp, records in batch.items():
                end = remaining.get(tp)
                if end is None:
                    continue
                for r in records:
                    if r.offset < end and (best is None or r.timestamp > best):
                        best = r.timestamp
                if records[-1].offset + 1 >= end:
                    del remaining[tp]
                    consumer.pause(tp)
        return best
    finally:
        consumer.close()
