"""True end offsets of Kafka partitions, read by fetching rather than by asking.

A bounded run must stop exactly after the last record each partition holds.
The obvious way to learn that offset, a ListOffsets request for "latest"
(kafka-python ``end_offsets``/``seek_to_end``, Flink's
``OffsetsInitializer.latest()``), is not trustworthy: the embedded Tansu
broker answers with the first offset of the last batch plus one, so a bounded
Flink job stops short and drops the tail of every partition.

This module asks for the answer in a way every broker gets right: it fetches.
Each partition is positioned a little before the advertised end (or at its
beginning), then polled until the consumer's position has caught up with the
high watermark carried by the fetch responses. The result is the larger of the
two, i.e. the offset the next record will get. Only the last batch of each
partition is read, so the cost does not grow with the size of the topic.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from pipelines.config import KafkaSettings
from pipelines.errors import StackError

_STACK_FIX = "check that the broker is up (`livefeat stack status`) and that the topic exists"


def kafka_python_config(
    kafka: KafkaSettings, bootstrap_servers: str | None = None
) -> dict[str, Any]:
    """kafka-python connection settings (servers and security) from the typed settings.

    ``bootstrap_servers`` overrides ``kafka.bootstrap_servers`` (e.g. a CLI flag).
    """
    servers = bootstrap_servers or kafka.bootstrap_servers
    config: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in servers.split(",")],
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        config["sasl_mechanism"] = kafka.sasl_mechanism
    if kafka.sasl_username:
        config["sasl_plain_username"] = kafka.sasl_username
    if kafka.sasl_password is not None:
        config["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return config


def true_end_offsets(
    kafka: KafkaSettings, topics: Iterable[str], *, timeout_s: float = 30.0
) -> dict[tuple[str, int], int]:
    """The offset the next record of each partition of ``topics`` will get.

    Args:
        kafka: where the broker is and how to authenticate.
        topics: topic names; every partition of each is included.
        timeout_s: give up after this long.

    Returns:
        ``{(topic, partition): end_offset}``. A bounded read of ``[start, end)``
        of every partition reads every record the topics held at call time.

    Raises:
        StackError: the broker cannot be reached, a topic does not exist, or a
            partition did not answer within ``timeout_s``.
    """
    names = list(dict.fromkeys(topics))
    where = f"broker {kafka.bootstrap_servers}"
    try:
        consumer = KafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **kafka_python_config(kafka),
        )
    except KafkaError as exc:
        raise StackError(
            f"cannot reach the Kafka broker ({exc})", where=where, fix=_STACK_FIX
        ) from exc
    try:
        return _fetch_ends(consumer, names, where, timeout_s)
    finally:
        consumer.close()


def _fetch_ends(
    consumer: KafkaConsumer, topics: list[str], where: str, timeout_s: float
) -> dict[tuple[str, int], int]:
    tps: list[TopicPartition] = []
    for topic in topics:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise StackError(
                f"topic {topic!r} does not exist",
                where=where,
                fix=f"create it (e.g. `livefeat stack up` creates the reference "
                f"topics) or correct the topic name {topic!r}",
            )
        tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
    if not tps:
        return {}
    consumer.assign(tps)
    # ListOffsets answers are only used as a starting hint: "latest" may be too small
    # (never trusted as the end), "earliest" bounds the seek from below.
    beginning = consumer.beginning_offsets(tps)
    advertised = consumer.end_offsets(tps)
    for tp in tps:
        consumer.seek(tp, max(beginning[tp], advertised[tp] - 1))
    ends: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + timeout_s
    pending = set(tps)
    while pending:
        consumer.poll(timeout_ms=200, max_records=10_000)
        for tp in list(pending):
            high = consumer.highwater(tp)
            position = consumer.position(tp)
            if high is not None and position >= high:
                ends[(tp.topic, tp.partition)] = max(high, position)
                pending.discard(tp)
                consumer.pause(tp)
        if pending and time.monotonic() > deadline:
            names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(pending)[:5])
            raise StackError(
                f"could not read the end of {len(pending)} partition(s) "
                f"in {timeout_s:g} s: {names}",
                where=where,
                fix=_STACK_FIX,
            )
    return {(tp.topic, tp.partition): ends[(tp.topic, tp.partition)] for tp in tps}
