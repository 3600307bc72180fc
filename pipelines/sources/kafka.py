"""Kafka topics as streams of raw records, with per-partition event-time watermarks.

One :class:`KafkaTopicSource` reads one topic. It is built on Flink's Kafka
*table* connector (the same ``KafkaSource`` underneath, from the same
connector jar) and converted to a ``DataStream``, because that is the only way
PyFlink 2.0 exposes a record's partition, offset and key: the DataStream
``KafkaSource`` builder offers only value deserializers, which see the value
bytes and nothing else. See docs/flink-runtime.md for the measurements.

Event time and watermarks:

* the Kafka record timestamp is the event time (SPEC);
* the watermark strategy is handed to the source itself, so each partition
  gets its own watermark and the source emits their minimum. Assigning
  timestamps in a later Python step instead marks most records late;
* ``W = max timestamp seen - flink.out_of_orderness_ms - 1``, the same as
  Flink's ``for_bounded_out_of_orderness``: a record is late when its
  timestamp is ``<= W``;
* unbounded sources mark a partition idle after ``flink.idleness_ms`` without
  records, so a quiet partition does not hold the job back. Bounded sources
  never do (an idle-then-resumed partition would see its records turn late).

Bounded mode stops every partition at its *true* end offset, read when the job
is built (:func:`~pipelines.sources.offsets.true_end_offsets`); the broker's
ListOffsets "latest" answer is never used, as it can be too small.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pyflink.datastream.functions import ProcessFunction

from pipelines.config import FlinkSettings, KafkaSettings
from pipelines.errors import DefinitionError
from pipelines.sources.base import RAW_RECORD, RawRecordRow, Source
from pipelines.sources.offsets import true_end_offsets

if TYPE_CHECKING:
    from pyflink.datastream import DataStream, StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

StartAt = Literal["earliest", "latest", "committed"]
"""Where reading starts when there is no checkpoint to resume from.

``earliest``: the first record kept; ``latest``: the true end at build time
(only records produced afterwards); ``committed``: the group's committed
offsets (needs ``group_id``), else the earliest.
"""

WatermarkEmit = Literal["periodic", "per_record"]
"""``periodic``: every ``pipeline.auto-watermark-interval`` (200 ms), cheapest.
``per_record``: after each record, deterministic (tests, replays), costlier."""

_COLUMNS = ("partition", "offset", "key", "value", "ts")
_SASL_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
_TABLE_ENVS: weakref.WeakKeyDictionary[Any, StreamTableEnvironment] = weakref.WeakKeyDictionary()


def watermark_expression(out_of_orderness_ms: int) -> str:
    """SQL watermark for the ``ts`` column: ``W = max ts - out_of_orderness - 1 ms``."""
    return f"`ts` - INTERVAL '0.001' SECOND * {out_of_orderness_ms + 1}"


def offsets_option(offsets: Mapping[int, int]) -> str:
    """``{0: 42, 1: 7}`` -> ``"partition:0,offset:42;partition:1,offset:7"``."""
    return ";".join(f"partition:{p},offset:{o}" for p, o in sorted(offsets.items()))


def _jaas_quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def kafka_properties(kafka: KafkaSettings) -> dict[str, str]:
    """Kafka client properties (``properties.*`` options) for servers and security."""
    props = {
        "properties.bootstrap.servers": kafka.bootstrap_servers,
        "properties.security.protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        props["properties.sasl.mechanism"] = kafka.sasl_mechanism
        module = _SASL_MODULES.get(kafka.sasl_mechanism.upper())
        if module and kafka.sasl_username is not None and kafka.sasl_password is not None:
            user = _jaas_quote(kafka.sasl_username)
            secret = _jaas_quote(kafka.sasl_password.get_secret_value())
            props["properties.sasl.jaas.config"] = (
                f'{module} required username="{user}" password="{secret}";'
            )
    return props


class _ToRawRecord(ProcessFunction):
    """Table row ``(partition, offset, key, value, ts)`` -> :data:`RAW_RECORD`.

    The event time is taken from the Flink record timestamp, which the source
    set from the Kafka record timestamp; the ``ts`` column itself is ignored
    (in thread mode it arrives as an opaque Java object).
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Any:
        yield RawRecordRow(self.topic, value[0], value[1], ctx.timestamp(), value[2], value[3])


@dataclass(frozen=True)
class KafkaTopicSource(Source):
    """Every record of one Kafka topic as :data:`RAW_RECORD` rows.

    Args:
        topic: the topic to read (all its partitions).
        kafka: broker address and security.
        flink: ``out_of_orderness_ms`` and ``idleness_ms`` are used.
        bounded: stop at the true end offsets read when :meth:`build` runs.
        start: see :data:`StartAt`.
        group_id: consumer group; offsets are committed to it on checkpoints.
        watermark_emit: see :data:`WatermarkEmit`.
        step: step name; ``read_<topic>`` by default.
        end_offsets: partition -> true end offset of a bounded run, when the caller has
            read them already (the run's summary counts up to the same offsets); read
            when :meth:`build` runs otherwise.
    """

    topic: str
    kafka: KafkaSettings
    flink: FlinkSettings
    bounded: bool = False
    start: StartAt = "earliest"
    group_id: str | None = None
    watermark_emit: WatermarkEmit = "periodic"
    step: str = ""
    end_offsets: Mapping[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.topic:
            raise DefinitionError("a Kafka source needs a topic name", where=f"step {self.name}")
        if self.start == "committed" and not self.group_id:
            raise DefinitionError(
                "start='committed' needs a consumer group",
                where=f"step {self.name}",
                fix="pass group_id=..., or start from 'earliest' or 'latest'",
            )

    @property
    def name(self) -> str:
        """The step name (``read_<topic>`` unless ``step`` is given)."""
        return self.step or f"read_{self.topic}"

    def table_options(
        self,
        *,
        end_offsets: Mapping[int, int] | None = None,
        start_offsets: Mapping[int, int] | None = None,
    ) -> dict[str, str]:
        """The Kafka table connector options (pure; :meth:`build` supplies the offsets).

        Args:
            end_offsets: partition -> true end offset; required when bounded.
            start_offsets: partition -> first offset to read; required for ``start='latest'``.
        """
        options = {
            "connector": "kafka",
            "topic": self.topic,
            **kafka_properties(self.kafka),
            "key.format": "raw",
            "key.fields": "key",
            "value.format": "raw",
            "value.fields-include": "EXCEPT_KEY",
            "scan.watermark.emit.strategy": (
                "on-event" if self.watermark_emit == "per_record" else "on-periodic"
            ),
        }
        if self.group_id:
            options["properties.group.id"] = self.group_id
        if self.start == "earliest":
            options["scan.startup.mode"] = "earliest-offset"
        elif self.start == "committed":
            options["scan.startup.mode"] = "group-offsets"
            options["properties.auto.offset.reset"] = "earliest"
        else:
            if start_offsets is None:
                raise ValueError("start='latest' needs start_offsets")
            options["scan.startup.mode"] = "specific-offsets"
            options["scan.startup.specific-offsets"] = offsets_option(start_offsets)
        if self.bounded:
            if end_offsets is None:
                raise ValueError("a bounded source needs end_offsets")
            options["scan.bounded.mode"] = "specific-offsets"
            options["scan.bounded.specific-offsets"] = offsets_option(end_offsets)
        elif self.flink.idleness_ms > 0:
            options["scan.watermark.idle-timeout"] = f"{self.flink.idleness_ms} ms"
        return options

    def build(self, env: StreamExecutionEnvironment) -> DataStream:
        """Add the source to ``env``; returns its stream of :data:`RAW_RECORD` rows.

        Raises:
            StackError: the end offsets were needed and the broker did not answer.
        """
        from pyflink.table import DataTypes, Schema, TableDescriptor

        ends: dict[int, int] | None = None
        if self.bounded and self.end_offsets is not None and self.start != "latest":
            ends = dict(self.end_offsets)
        elif self.bounded or self.start == "latest":
            found = true_end_offsets(self.kafka, [self.topic])
            ends = {partition: end for (_, partition), end in found.items()}
        schema = (
            Schema.new_builder()
            .column_by_metadata("partition", DataTypes.INT(), "partition", True)
            .column_by_metadata("offset", DataTypes.BIGINT(), "offset", True)
            .column_by_metadata("ts", DataTypes.TIMESTAMP_LTZ(3), "timestamp", True)
            .column("key", DataTypes.BYTES())
            .column("value", DataTypes.BYTES())
            .watermark("ts", watermark_expression(self.flink.out_of_orderness_ms))
            .build()
        )
        options = self.table_options(
            end_offsets=ends if self.bounded else None,
            start_offsets=ends if self.start == "latest" else None,
        )
        builder = TableDescriptor.for_connector("kafka").schema(schema)
        for key, value in options.items():
            if key != "connector":
                builder = builder.option(key, value)
        t_env = _table_env(env)
        table_name = re.sub(r"\W", "_", self.name)
        t_env.create_temporary_table(table_name, builder.build())
        columns = ", ".join(f"`{c}`" for c in _COLUMNS)
        table = t_env.sql_query(f"SELECT {columns} FROM `{table_name}`")
        return (
            t_env.to_data_stream(table)
            .process(_ToRawRecord(self.topic), output_type=RAW_RECORD)
            .name(self.name)
            .uid(self.name)
        )


def _table_env(env: StreamExecutionEnvironment) -> StreamTableEnvironment:
    """One table environment per stream environment (creating one costs seconds)."""
    from pyflink.table import StreamTableEnvironment

    t_env = _TABLE_ENVS.get(env)
    if t_env is None:
        t_env = StreamTableEnvironment.create(env)
        _TABLE_ENVS[env] = t_env
    return t_env


def kafka_sources(
    topics: list[str] | tuple[str, ...],
    kafka: KafkaSettings,
    flink: FlinkSettings,
    **options: Any,
) -> list[KafkaTopicSource]:
    """One :class:`KafkaTopicSource` per topic, all with the same ``options``."""
    return [KafkaTopicSource(topic, kafka, flink, **options) for topic in topics]
