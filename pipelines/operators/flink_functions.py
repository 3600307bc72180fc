"""PyFlink functions: thin adapters from Flink's state and timers to the pure logic.

* :class:`AdmitFunction`: decode, row rules, lateness (side output: quarantine);
* :class:`EnrichFunction`: keyed by changelog key; as-of join in event-time order;
* :class:`ViewsFunction`: keyed by ``view|entity``; drives the window engine;
* :class:`BatchingSinkFunction`: keyed by dataset; buffers rows in keyed state and
  writes them in batches (the offline sink with the quality gate inside it is
  :class:`pipelines.operators.gate_function.GatedSinkFunction`).

Event-time discipline: keyed functions buffer what arrives in ``MapState``
(time -> items) and act only in ``on_timer``, i.e. once the watermark has
passed that time, so they see every input of that millisecond at once and
their output is final. State lives in Flink state, so checkpoints capture it.

Functions are constructed on the client and pickled to the workers: they
hold only names and settings, and build their heavy objects in ``open``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext, TimeDomain
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor

from pipelines.features.engine import Enricher, Item, ViewEngine
from pipelines.features.registry import load_pipeline
from pipelines.operators.admission import LATE, Admission, RawRecord
from pipelines.operators.metrics import PipelineMetrics
from pipelines.operators.routing import EVENT, VERSION, RoutingPlan, split_view_key, view_key

PICKLED = Types.PICKLED_BYTE_ARRAY()
QUARANTINE = OutputTag("quarantine", PICKLED)
MAX_TIME = 9_223_372_036_854_775_807  # Long.MAX_VALUE: the watermark at the end of bounded input


def _position(record: dict[str, Any]) -> tuple[int, int]:
    return (int(record.get("_partition", 0)), int(record.get("_offset", 0)))


def partition_key(raw: Any) -> str:
    """Key of the admit step: ``topic|partition`` of a RAW_RECORD row."""
    return f"{raw[0]}|{raw[1]}"


class AdmitFunction(KeyedProcessFunction):
    """Raw Kafka record -> ``(topic, time, record)``; bad or late records to QUARANTINE.

    Keyed by ``topic|partition`` (:func:`partition_key`) so that lateness is decided the
    same way by every run over the same records, restored or not. A record is late when
    its event time is at or behind the larger of the operator's current watermark and its
    partition's own watermark (the largest Kafka timestamp the partition has shown before
    it, minus the out-of-orderness bound, minus 1: what the source's watermark generator
    computes). Flink does not checkpoint watermarks: a restored job starts from none, and
    judged by the live watermark alone it would accept records the first run had
    quarantined as late. The partition's largest timestamp is keyed state, so it comes
    back with the Kafka offsets. The live watermark still counts, because a partition that
    was idle does not hold it back and its records may be behind it.
    """

    def __init__(
        self,
        pipeline: str,
        schemas_dir: str | None = None,
        reader_versions: dict[str, int] | None = None,
        out_of_orderness_ms: int = 0,
    ) -> None:
        self.pipeline_name = pipeline
        self.schemas_dir = schemas_dir
        self.reader_versions = dict(reader_versions or {})
        self.out_of_orderness_ms = out_of_orderness_ms
        self.admission: Admission | None = None
        self.plan: RoutingPlan | None = None

    def open(self, runtime_context: RuntimeContext) -> None:
        from schemas.codec import SingleObjectCodec
        from schemas.store import SchemaStore

        self.plan = RoutingPlan(load_pipeline(self.pipeline_name))
        store = SchemaStore.load(self.schemas_dir)
        self.admission = Admission(
            self.plan, SingleObjectCodec(store), reader_versions=self.reader_versions
        )
        self.metrics = PipelineMetrics(runtime_context.get_metrics_group())
        self.partition_max = runtime_context.get_state(
            ValueStateDescriptor("partition_max_ts", Types.LONG())
        )
        # The state's value per partition key, cached: each key is served by one subtask.
        self.max_ts: dict[tuple[str, int], int | None] = {}

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Any:
        assert self.admission is not None and self.plan is not None  # set in open()
        # value is a RAW_RECORD row: (topic, partition, offset, timestamp, key, value)
        raw = RawRecord(value[0], value[1], value[2], value[3], value[5] or b"")
        position = (raw.topic, raw.partition)
        if position in self.max_ts:
            seen = self.max_ts[position]
        else:
            seen = self.max_ts[position] = self.partition_max.value()
        watermark = ctx.timer_service().current_watermark()
        if seen is not None:
            watermark = max(watermark, seen - self.out_of_orderness_ms - 1)
        if raw.timestamp is not None and (seen is None or raw.timestamp > seen):
            self.max_ts[position] = raw.timestamp
            self.partition_max.update(raw.timestamp)
        record, quarantined = self.admission.admit(raw, watermark)
        metrics = self.metrics
        metrics.inc("events_in", label=("topic", raw.topic))
        if watermark > 0:
            metrics.set_gauge("watermark_lag_ms", int(time.time() * 1000) - watermark)
        if quarantined is not None:
            reason = quarantined["reason"]
            metrics.inc("quarantined", label=("reason", reason))
            if reason == LATE:
                metrics.inc("late")
            yield QUARANTINE, quarantined
        else:
            assert record is not None
            metrics.inc("accepted")
            yield raw.topic, record[self.plan.timestamp_field(raw.topic)], record

    def close(self) -> None:
        if self.admission is not None:
            self.metrics.push()


class RouteFunction:
    """Fan an admitted record out to the enrich and views steps (used in flat_map)."""

    def __init__(self, pipeline: str, step: str) -> None:
        self.pipeline_name = pipeline
        self.step = step
        self.plan: RoutingPlan | None = None

    def __call__(self, value: Any) -> Any:
        if self.plan is None:
            self.plan = RoutingPlan(load_pipeline(self.pipeline_name))
        topic, ts, record = value
        if self.step == "enrich":
            for t in self.plan.to_enrich.get(topic, []):
                yield f"{t.source}|{record[t.key_field]}", ts, t.kind, t.source, record
        else:
            for v in self.plan.to_views.get(topic, []):
                if not v.enriched:
                    yield view_key(v.view, record[v.key_field]), ts, v.kind, v.name, record


class _BufferedKeyed(KeyedProcessFunction):
    """Buffers ``(key, time, kind, name, record)`` items per time until the watermark passes."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.buffer = runtime_context.get_map_state(
            MapStateDescriptor("buffer", Types.LONG(), PICKLED)
        )
        self.state = runtime_context.get_state(ValueStateDescriptor("state", PICKLED))

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Any:
        _, ts, kind, name, record = value
        items = self.buffer.get(ts) or []
        items.append((kind, name, record))
        self.buffer.put(ts, items)
        ctx.timer_service().register_event_time_timer(ts)
        return iter(())

    def take(
        self, ts: int
    ) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
        """Remove and return (versions in Kafka order, events) buffered at ``ts``."""
        items = self.buffer.get(ts)
        if not items:
            return [], []
        self.buffer.remove(ts)
        versions = sorted(
            ((n, r) for k, n, r in items if k == VERSION), key=lambda v: _position(v[1])
        )
        events = [(n, r) for k, n, r in items if k == EVENT]
        return versions, events


class EnrichFunction(_BufferedKeyed):
    """As-of join for sources with an enrichment; emits enriched events keyed for the views."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline_name = pipeline

    def open(self, runtime_context: RuntimeContext) -> None:
        super().open(runtime_context)
        self.plan = RoutingPlan(load_pipeline(self.pipeline_name))
        self.enrichers = {
            name: Enricher(src.enrichments[0].fields, src.enrichments[0].prefix)
            for name, src in self.plan.enriched_sources.items()
        }
        self.targets = {
            name: [v for v in self.plan.to_views[src.topic] if v.enriched and v.name == name]
            for name, src in self.plan.enriched_sources.items()
        }

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        versions, events = self.take(timestamp)
        source = str(ctx.get_current_key()).split("|", 1)[0]
        enricher = self.enrichers[source]
        current = self.state.value()
        for _, version in versions:
            current = enricher.apply_version(current, version)
        if versions:
            self.state.update(current)
        for _, event in events:
            enriched = enricher.enrich(current, event)
            for target in self.targets[source]:
                yield (
                    view_key(target.view, enriched[target.key_field]),
                    timestamp,
                    EVENT,
                    source,
                    enriched,
                )


class FlinkWindows:
    """The engine's :class:`~pipelines.features.engine.WindowStore` over the current key's
    ``MapState``: window entries by expiration time (each gets an event-time timer, so
    the entity is visited when they leave), and the distinct-count multisets."""

    def __init__(self, due: Any, distinct: Any) -> None:
        self.due = due
        self.distinct = distinct
        self.timers: Any = None  # the timer service of the call being served

    def take(self, time_ms: int) -> Any:
        # Every expiration time has its own timer, and timers fire in time order, so
        # entries due before ``time_ms`` were taken at their own times already.
        items = self.due.get(time_ms)
        if not items:
            return ()
        self.due.remove(time_ms)
        return items

    def put(self, expire_at: int, items: list[Item]) -> None:
        kept = self.due.get(expire_at)
        self.due.put(expire_at, kept + items if kept else items)
        self.timers.register_event_time_timer(expire_at)

    def bump(self, slot: int, value: Any, delta: int) -> int:
        key = f"{slot}\x1f{value!r}"
        n = int(self.distinct.get(key) or 0) + delta
        if n:
            self.distinct.put(key, n)
        else:
            self.distinct.remove(key)
        return n


class ViewsFunction(_BufferedKeyed):
    """Exact sliding windows of every view; emits ``(view, row)`` changelog rows."""

    def __init__(self, pipeline: str, horizon_ms: int | None) -> None:
        self.pipeline_name = pipeline
        self.horizon_ms = horizon_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        super().open(runtime_context)
        pipeline = load_pipeline(self.pipeline_name)
        self.engines = {v.name: ViewEngine(v) for v in pipeline.views}
        self.key_names = {v.name: v.entity.join_key for v in pipeline.views}
        self.windows = FlinkWindows(
            runtime_context.get_map_state(MapStateDescriptor("due", Types.LONG(), PICKLED)),
            runtime_context.get_map_state(
                MapStateDescriptor("distinct", Types.STRING(), Types.LONG())
            ),
        )
        self.metrics = PipelineMetrics(runtime_context.get_metrics_group())

    def close(self) -> None:
        self.metrics.push()

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        view, entity = split_view_key(str(ctx.get_current_key()))
        engine = self.engines[view]
        if self.horizon_ms is not None and timestamp > self.horizon_ms:
            # Past the final watermark of a bounded run: the input ended before this time.
            return
        versions, events = self.take(timestamp)
        meta = self.state.value() or engine.new_meta()
        self.windows.timers = ctx.timer_service()
        values = engine.advance(meta, self.windows, timestamp, events, versions)
        if values is not None:
            row = {
                self.key_names[view]: entity,
                "event_timestamp": timestamp,
                "created_timestamp": int(time.time() * 1000),
            }
            row.update(zip(engine.feature_names, values, strict=True))
            self.metrics.inc("changelog_rows", label=("view", view))
            yield view, row
        if meta.pending == 0 and all(v is None for v in meta.asof):
            self.state.clear()  # nothing in any window: the entity is forgotten
        else:
            self.state.update(meta)


class BatchingSinkFunction(KeyedProcessFunction):
    """Keyed by dataset: buffers rows in keyed state, writes a batch when full, on a timer,
    and at the end of bounded input. Buffered rows are in checkpointed state, so a crash
    after a checkpoint loses none of them; a replay may rewrite rows, which readers dedupe.

    Args:
        sink_factory: ``writer_id -> Sink``, called in ``open``.
        schemas: Arrow schema per dataset.
        batch_rows: a dataset's buffer is written when it holds this many rows.
        flush_interval_ms: ... or this long (processing time) after its first row.
        metric: counter of rows written (``offline_writes``, ``online_writes``).
        forward: datasets whose rows also go downstream as ``(dataset, row)`` when
            they are buffered (the offline sink hands the changelog on to the online
            sink this way when the quality gate runs inside it).
    """

    def __init__(
        self,
        sink_factory: Any,
        schemas: dict[str, Any],
        batch_rows: int = 20_000,
        flush_interval_ms: int = 2_000,
        metric: str | None = None,
        forward: frozenset[str] = frozenset(),
    ) -> None:
        self.sink_factory = sink_factory
        self.schemas = schemas
        self.batch_rows = batch_rows
        self.flush_interval_ms = flush_interval_ms
        self.metric = metric
        self.forward = forward

    def open(self, runtime_context: RuntimeContext) -> None:
        self.rows = runtime_context.get_list_state(ListStateDescriptor("rows", PICKLED))
        # Buffered rows per dataset, counted in memory: the count only decides when a batch
        # is full, so after a restore (count 0, rows restored) a batch may just run longer.
        # Keeping it in state cost two state calls per row.
        self.counts: dict[str, int] = {}
        # When each dataset's buffer is due (processing time), also in memory: after a
        # restore it is unknown, and the restored timer writes whatever is buffered.
        self.flush_due: dict[str, int] = {}
        # A random writer id keeps file names unique across subtasks and restarts
        # (get_index_of_this_subtask() is not available in thread mode).
        self.sink = self.sink_factory(uuid.uuid4().hex[:8])
        self.metrics = PipelineMetrics(runtime_context.get_metrics_group())

    def close(self) -> None:
        self.metrics.push()
        self.sink.close()

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Any:
        dataset, row = value
        self._buffer(dataset, row, ctx)
        if dataset in self.forward:
            yield value

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        dataset = str(ctx.get_current_key())
        if ctx.time_domain() == TimeDomain.EVENT_TIME:
            due = timestamp >= MAX_TIME  # the end of bounded input (other event-time
            # timers belong to a subclass's own logic)
        else:
            due = timestamp >= self.flush_due.get(dataset, 0)
        if due:
            self._flush(dataset)
        return iter(())

    def _buffer(self, dataset: str, row: Any, ctx: Any) -> None:
        self.rows.add(row)
        n = self.counts.get(dataset, 0) + 1
        if n == 1:
            timers = ctx.timer_service()
            due = timers.current_processing_time() + self.flush_interval_ms
            self.flush_due[dataset] = due
            timers.register_processing_time_timer(due)
            timers.register_event_time_timer(MAX_TIME)
        if n >= self.batch_rows:
            self._flush(dataset)
        else:
            self.counts[dataset] = n

    def _flush(self, dataset: str) -> None:
        rows = list(self.rows.get() or [])
        if rows:
            self.sink.write(dataset, self.schemas[dataset], rows)
            if self.metric is not None:
                self.metrics.inc(self.metric, len(rows))
                if self.metric == "online_writes":
                    newest = max(int(r["event_timestamp"]) for r in rows)
                    self.metrics.set_gauge("freshness_ms", int(time.time() * 1000) - newest)
        self.rows.clear()
        self.counts.pop(dataset, None)
        self.flush_due.pop(dataset, None)
