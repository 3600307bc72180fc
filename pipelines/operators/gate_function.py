"""The quality gate in the Flink job: micro-batches of changelog rows, one verdict each.

The gate runs inside the offline sink step (:class:`GatedSinkFunction`, keyed by
dataset, operator ``offline_sink``): the changelog rows of a view cross one keyed
exchange on their way to the stores either way, and a step of its own cost a second
one for every row (15 % of the job's time, measured by ``bench/quality.py``). Rows the
gate lets through are buffered for the offline store and handed on to the online sink;
events and quarantine rows only pass the sink. :class:`Gate` is the gate's logic for
one keyed function (state, timers, verdicts), so it does not care which step hosts it.

The gate buffers a view's changelog rows in keyed ``ListState`` (checkpointed: a
crash loses none), cuts micro-batches exactly as :class:`quality.MicroBatcher` does
(a batch closes at ``batch_max_rows`` rows, or when a row's event time is
``batch_max_ms`` or more after the batch's first row), and calls
:meth:`quality.QualityGate.check_features` once per batch:

* views whose action is ``warn`` (the default) forward each row downstream as it comes,
  unchanged and in order, so the gate adds no latency; the batch's verdict is recorded,
  counted and alerted when it closes (``warn`` means "materialize, record, alert");
* views whose action is ``block`` forward a batch's rows only once its verdict is
  ``pass``; a ``block`` verdict leaves them in the gate's result store
  (``held/<view>/<batch_id>.json``), in no store until ``livefeat quality release``.

Rows of one millisecond arrive together: the ``views`` step emits a row when the
watermark passes its event time, and forwards the watermark after the rows. So once
the watermark passes a batch's last millisecond (``first + batch_max_ms - 1``) no
row of that batch can still come, and an event-time timer there closes it. At the
end of bounded input the watermark jumps to the maximum and closes the last batch.
Batch ids are ``<view>-<first event time>-<sequence>`` with the sequence in keyed
state, so a replay after a restore cuts and names the same batches again (and
re-validating one overwrites its held file; readers keep one result per batch id).

Validation is off the task thread and does not stall the job: a closed batch goes to
keyed ``MapState`` (``gate_closed``, checkpointed) and to the gate's own worker (a
Python process of its own, so that Great Expectations neither takes the job's GIL nor
its core; a thread if no process can start: :mod:`pipelines.operators.gate_worker`),
and the step goes on buffering the next batch. Verdicts are taken in batch order on
the step's next calls for the view (a row, or a processing-time timer polling every
``POLL_MS``), and the batch's rows are forwarded (or not) then. So loading Great
Expectations (seconds: its import) overlaps with the job's start-up and the first
batches, instead of stopping the step at the first batch cut. The step waits only
when a view has ``MAX_PENDING_ROWS`` rows without a verdict (backpressure), and at the
end of bounded input (the final watermark fires a timer at ``MAX_TIME``), where it
takes every verdict before the watermark goes on to the sinks. After a restore the
batches in ``gate_closed`` are validated again.

Topics with an events suite (input drift, e.g. order amounts) are gated too: their
accepted events, on their way to the event log, are judged against the topic's
profile. Events reach the sink in arrival order (partitions read ahead of one another
by seconds to minutes), not in event-time order as changelog rows do, so their
batches are tumbling event-time windows of ``batch_max_ms`` (by the event-time field
the suite names), kept in keyed ``ListState`` and closed by an event-time timer when
the watermark passes the window's end: an event admitted later than that would have
been late, and quarantined. Their action is always ``warn``: the events have already
been applied to the features, so a verdict can only be recorded and alerted.

Integrity failures (e.g. a negative count) and batches Great Expectations cannot
evaluate (``gate_error``) fail the batch like drift does, so they take the view's
action: nothing is dropped; rows not forwarded are in a held batch, counted in the
results. Views without a feature suite pass through unchanged (the job logs which).

On close, each task records what the gate cost it: one ``gate_step`` line in the
results (load time, validations, time the task thread waited for verdicts).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.state import (
    ListStateDescriptor,
    MapStateDescriptor,
    ValueStateDescriptor,
)

from pipelines.config import Settings
from pipelines.features.definitions import Pipeline
from pipelines.operators.flink_functions import MAX_TIME, PICKLED, BatchingSinkFunction
from pipelines.operators.gate_worker import GateWorker, Verdict
from pipelines.operators.metrics import PipelineMetrics
from quality.batcher import MicroBatch
from quality.config import GateConfig, ResolvedPolicy
from quality.results import ResultStore
from quality.suites import (
    QUALITY_DIR,
    SuiteFile,
    event_suite_name,
    feature_suite_name,
    load_suite_files,
)

log = logging.getLogger("livefeat.quality")

MAX_PENDING_ROWS = 50_000
"""Rows of one view's closed batches that may wait for a verdict before the step waits
(about 50 MB in memory, as much again in state)."""

POLL_MS = 200
"""How often (processing time) a view with batches waiting for a verdict looks again."""


@dataclass
class _Open:
    """The open batch of one view, mirrored in memory (``first_ms`` None: no open batch)."""

    first_ms: int | None
    seq: int
    count: int


@dataclass
class _Closed:
    """A closed batch waiting for its verdict (its rows are also in ``gate_closed``)."""

    seq: int
    batch_id: str
    rows: list[Any]
    verdict: Future[Verdict]


@dataclass
class _Costs:
    """What the step cost this task (recorded on close as a ``gate_step`` result)."""

    batches: int = 0
    validation_s: float = 0.0
    waited_s: float = 0.0
    most_pending: int = 0


class Gate:
    """The gate's logic inside a keyed function whose key names one view (module docs).

    The host calls :meth:`open` and :meth:`close` from its own, and hands over each row
    of a gated view (:meth:`accept`) and each timer (:meth:`on_timer`); both return the
    rows to pass on, in order. Keyed state and timers are the host's, for its current key.

    Args:
        quality_dir: directory with ``suites/`` and ``profiles/`` (None: the shipped ones).
        config: the gate settings, ``results_dir`` absolute (workers may run elsewhere).
        views: the views to validate; rows of other views pass through.
        inputs: topics whose accepted events are validated too (events suites): their
            event-time field and their policy (``GateConfig.input_policy``: ``warn``).
        tags: stored with every result (``{"run": ...}`` names the run).
        python: the interpreter for the gate's validation process (``gated_sink`` gives
            the one building the job, which is the one the workers run: Flink's
            ``python.executable`` and ``python.client.executable`` are the same); None:
            validate on a thread of the worker's interpreter.
    """

    def __init__(
        self,
        quality_dir: str | None,
        config: GateConfig,
        views: list[str],
        tags: dict[str, str] | None = None,
        python: str | None = None,
        inputs: Mapping[str, tuple[str, ResolvedPolicy]] | None = None,
    ) -> None:
        self.quality_dir = quality_dir
        self.config = config
        self.inputs = {t: field for t, (field, _) in (inputs or {}).items()}
        self.input_policies = {t: policy for t, (_, policy) in (inputs or {}).items()}
        self.views = frozenset(views) | frozenset(self.inputs)
        self.tags = dict(tags or {})
        self.python = python
        self.validator: GateWorker | None = None

    def gates(self, view: str) -> bool:
        """Whether ``view`` is validated (the others pass unchecked)."""
        return view in self.views

    def open(self, runtime_context: RuntimeContext, metrics: PipelineMetrics) -> None:
        """Create the state handles and start loading the gate (the host's ``open``)."""
        # The gate starts loading first thing, off the task thread, and nothing waits
        # for it before a verdict is needed.
        quality_dir = None if self.quality_dir is None else Path(self.quality_dir)
        if self.views:  # no view to validate: rows only pass, nothing to load
            self.validator = GateWorker(quality_dir, self.config, self.tags, self.python)
        self.costs = _Costs()
        self.rows = runtime_context.get_list_state(ListStateDescriptor("gate_rows", PICKLED))
        # a topic's events by tumbling window: (window start, row), in arrival order
        self.windows = runtime_context.get_list_state(
            ListStateDescriptor("gate_windows", PICKLED)
        )
        # (first event time of the open batch or None, sequence of the last batch opened)
        self.batch = runtime_context.get_state(ValueStateDescriptor("gate_batch", PICKLED))
        # closed batches without a verdict yet: sequence -> (first event time, rows)
        self.closed = runtime_context.get_map_state(
            MapStateDescriptor("gate_closed", Types.LONG(), PICKLED)
        )
        # What the state says, per view, read once per task attempt: after a restore the
        # count is recomputed from the restored rows, and closed batches are validated
        # again. Saves state calls per row.
        self.open_batches: dict[str, _Open] = {}
        self.waiting: dict[str, deque[_Closed]] = {}
        self.policies = {v: self.config.policy(v) for v in self.views if v not in self.inputs}
        self.policies.update(self.input_policies)
        self.metrics = metrics

    def close(self) -> None:
        """Stop the validation worker and record the gate's costs (the host's ``close``)."""
        validator = self.validator
        if validator is None:
            return
        validator.close()
        if self.costs.batches:
            costs = self.costs
            load_s = validator.load_s
            ResultStore(self.config.results_path).append({
                **self.tags,
                "kind": "gate_step",
                "views": sorted(self.views),
                "worker": validator.kind,
                "load_s": None if load_s is None else round(load_s, 3),
                "gx_imported_before": validator.gx_imported_before,
                "batches": costs.batches,
                "validation_s": round(costs.validation_s, 3),
                "waited_s": round(costs.waited_s, 3),
                "most_pending": costs.most_pending,
            })

    # -- the open batch ------------------------------------------------------------------
    def _current(self, view: str) -> _Open:
        found = self.open_batches.get(view)
        if found is None:
            stored = self.batch.value()
            first, seq = stored if stored is not None else (None, 0)
            count = 0 if first is None else sum(1 for _ in self.rows.get() or [])
            found = self.open_batches[view] = _Open(first, seq, count)
        return found

    def _start(self, view: str, t: int, ctx: Any) -> _Open:
        current = self._current(view)
        current.first_ms, current.seq, current.count = t, current.seq + 1, 0
        self.batch.update((t, current.seq))
        span = self.policies[view].batch_max_ms
        ctx.timer_service().register_event_time_timer(t + span - 1)
        return current

    def _close(self, view: str, ctx: Any) -> Iterator[Any]:
        """Close the open batch of ``view``: hand it to the gate's thread; forward what
        has a verdict."""
        current = self._current(view)
        if current.first_ms is None:
            return
        rows = list(self.rows.get() or [])
        batch = MicroBatch(view, current.first_ms, rows, seq=current.seq)
        self.rows.clear()
        current.first_ms, current.count = None, 0
        self.batch.update((None, current.seq))
        if rows:
            yield from self._validate(view, batch, ctx)

    def _validate(self, view: str, batch: MicroBatch, ctx: Any) -> Iterator[Any]:
        """Hand a closed batch to the validator; forward what has a verdict."""
        rows = batch.rows
        waiting = self._waiting(view)  # (read from the state before this batch is in it)
        self.closed.put(batch.seq, (batch.first_ms, rows))
        waiting.append(self._submit(view, batch.seq, batch.batch_id, rows))
        self.costs.most_pending = max(self.costs.most_pending, len(waiting))
        timers = ctx.timer_service()
        timers.register_processing_time_timer(timers.current_processing_time() + POLL_MS)
        timers.register_event_time_timer(MAX_TIME)  # the end of bounded input takes them all
        yield from self._forward(view, keep_rows=MAX_PENDING_ROWS)

    # -- batches waiting for a verdict ---------------------------------------------------
    def _submit(self, view: str, seq: int, batch_id: str, rows: list[Any]) -> _Closed:
        assert self.validator is not None  # set in open()
        return _Closed(seq, batch_id, rows, self.validator.submit(view, rows, batch_id))

    def _waiting(self, view: str) -> deque[_Closed]:
        found = self.waiting.get(view)
        if found is None:
            found = self.waiting[view] = deque()
            # batches closed before a restore: validate them again, in order
            for seq, (first_ms, rows) in sorted(self.closed.items()):
                batch = MicroBatch(view, first_ms, rows, seq=seq)
                found.append(self._submit(view, seq, batch.batch_id, rows))
        return found

    def _forward(self, view: str, keep_rows: int | None = None) -> Iterator[Any]:
        """Forward the rows of the oldest batches that have a verdict, in batch order.

        ``keep_rows``: wait for verdicts until at most this many rows are left waiting
        (None: take only the verdicts that are there)."""
        waiting = self._waiting(view)
        while waiting:
            head = waiting[0]
            if not head.verdict.done():
                if keep_rows is None or sum(len(b.rows) for b in waiting) <= keep_rows:
                    return
                started = time.perf_counter()
                head.verdict.exception()  # waits
                self.costs.waited_s += time.perf_counter() - started
            failed = head.verdict.exception()
            if failed is not None and GateWorker.is_broken(failed):
                assert self.validator is not None
                self.validator.fall_back()  # validate again, on a thread
                for item in waiting:
                    item.verdict = self.validator.submit(view, item.rows, item.batch_id)
                continue
            verdict, seconds = head.verdict.result()
            waiting.popleft()
            self.closed.remove(head.seq)
            self._count(verdict, len(head.rows), seconds)
            # warn views forwarded their rows on arrival; block views forward a batch that
            # passed now (a blocked one: check_features wrote held/<view>/<id>)
            if self.policies[view].action == "block" and verdict.action != "block":
                yield from head.rows

    def _count(self, verdict: Any, rows: int, seconds: float) -> None:
        costs = self.costs
        costs.batches += 1
        costs.validation_s += seconds
        metrics = self.metrics
        metrics.inc("gate_validation_us", int(seconds * 1e6))
        if verdict.view in self.inputs:  # input drift: counted apart from the changelog's
            metrics.inc("input_drift_batches", label=("outcome", verdict.action))
            return
        metrics.inc("gate_batches", label=("outcome", verdict.action))
        metrics.inc("gate_rows", rows, label=("outcome", verdict.action))
        if not verdict.judged:
            metrics.inc("gate_not_judged")

    # -- a topic's events: tumbling windows ---------------------------------------------
    def _accept_event(self, view: str, row: Any, ctx: Any) -> Iterator[Any]:
        t = int(row[self.inputs[view]])
        span = self.policies[view].batch_max_ms
        start = t - t % span
        self.windows.add((start, row))
        ctx.timer_service().register_event_time_timer(start + span - 1)  # deduplicated
        yield row  # warn: written at once, judged when the window closes

    def _close_windows(self, view: str, timestamp: int, final: bool, ctx: Any) -> Iterator[Any]:
        """Close every window of ``view`` whose end the watermark passed (all at the end)."""
        span = self.policies[view].batch_max_ms
        due: dict[int, list[Any]] = {}
        kept: list[Any] = []
        for start, row in self.windows.get() or []:
            if final or start + span - 1 <= timestamp:
                due.setdefault(start, []).append(row)
            else:
                kept.append((start, row))
        if not due:
            return
        if kept:
            self.windows.update(kept)
        else:
            self.windows.clear()
        field = self.inputs[view]
        current = self._current(view)
        for start in sorted(due):
            current.seq += 1
            self.batch.update((None, current.seq))
            rows = sorted(due[start], key=lambda r: int(r[field]))  # stable: ties by arrival
            yield from self._validate(view, MicroBatch(view, start, rows, seq=current.seq), ctx)

    # -- what the host calls --------------------------------------------------------------
    def accept(self, view: str, row: Any, ctx: Any) -> Iterator[Any]:
        """Take one row of a gated view (or topic); yield the rows to pass on now."""
        waiting = self.waiting.get(view)
        if waiting is None or (waiting and waiting[0].verdict.done()):
            yield from self._forward(view)
        if view in self.inputs:
            yield from self._accept_event(view, row, ctx)
            return
        t = int(row["event_timestamp"])
        policy = self.policies[view]
        current = self._current(view)
        if current.first_ms is not None and t - current.first_ms >= policy.batch_max_ms:
            yield from self._close(view, ctx)
        if current.first_ms is None:
            self._start(view, t, ctx)
        self.rows.add(row)
        current.count += 1
        if policy.action == "warn":  # materialize at once, judge the batch when it closes
            yield row
        if current.count >= policy.batch_max_rows:
            yield from self._close(view, ctx)

    def on_timer(self, view: str, timestamp: int, ctx: Any) -> Iterator[Any]:
        """A timer of the host's key fired; yield the rows to pass on now.

        The host's own timers come here too: the gate acts only on what is due."""
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            waiting = self.waiting.get(view)
            if waiting is None or waiting:  # (None: after a restore, not read yet)
                yield from self._forward(view)
                if self._waiting(view):
                    timers = ctx.timer_service()
                    timers.register_processing_time_timer(
                        timers.current_processing_time() + POLL_MS
                    )
            return
        # the end of bounded input: every verdict, before the watermark reaches the sinks
        final = max(timestamp, ctx.timer_service().current_watermark()) >= MAX_TIME
        if view in self.inputs:
            yield from self._close_windows(view, timestamp, final, ctx)
            yield from self._forward(view, keep_rows=0 if final else None)
            return
        current = self._current(view)
        # A timer of a batch that closed by size (or by a later row) finds a newer batch,
        # or none: only the batch whose last millisecond the watermark passed closes.
        if current.first_ms is not None and (
            current.first_ms + self.policies[view].batch_max_ms - 1 <= timestamp
        ):
            yield from self._close(view, ctx)
        yield from self._forward(view, keep_rows=0 if final else None)


class GatedSinkFunction(BatchingSinkFunction):
    """The offline sink with the gate inside: keyed by dataset, ``(dataset, row)`` in.

    Rows of a gated view's changelog (``features/<view>``) or of a gated topic's event
    log (``events/<topic>``) go through :class:`Gate`; what it lets through is buffered
    for the store like any other row and, for the datasets in ``forward``, passed on
    downstream (to the online sink). Other datasets are only buffered.

    Args:
        gate: the gate (its views and inputs are the ones validated).
        gated: dataset -> the name the gate knows it by (view or topic), for every
            dataset the gate may validate.
        sink_factory, schemas, metric, forward: as :class:`BatchingSinkFunction`.
    """

    def __init__(
        self,
        gate: Gate,
        gated: Mapping[str, str],
        sink_factory: Any,
        schemas: dict[str, Any],
        metric: str | None = None,
        forward: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(sink_factory, schemas, metric=metric, forward=forward)
        self.gate = gate
        self.gated = dict(gated)

    def open(self, runtime_context: RuntimeContext) -> None:
        super().open(runtime_context)
        self.gate.open(runtime_context, self.metrics)

    def close(self) -> None:
        self.gate.close()
        super().close()

    def _gated(self, dataset: str) -> str | None:
        view = self.gated.get(dataset)
        return view if view is not None and self.gate.gates(view) else None

    def _pass(self, dataset: str, rows: Iterator[Any], ctx: Any) -> Iterator[Any]:
        forward = dataset in self.forward
        for row in rows:
            self._buffer(dataset, row, ctx)
            if forward:
                yield dataset, row

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Any:
        dataset, row = value
        view = self._gated(dataset)
        if view is None:
            yield from super().process_element(value, ctx)
        else:
            yield from self._pass(dataset, self.gate.accept(view, row, ctx), ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        dataset = str(ctx.get_current_key())
        view = self._gated(dataset)
        if view is not None:  # first the gate: at the end of input it forwards every row
            yield from self._pass(dataset, self.gate.on_timer(view, timestamp, ctx), ctx)
        yield from super().on_timer(timestamp, ctx)


def gated_views(pipeline: Pipeline, suites: Mapping[str, SuiteFile]) -> list[str]:
    """The pipeline's views that have a feature suite (the others pass the gate unchecked)."""
    return [v.name for v in pipeline.views if feature_suite_name(v.name) in suites]


def gated_inputs(
    pipeline: Pipeline, suites: Mapping[str, SuiteFile], config: GateConfig
) -> dict[str, tuple[str, ResolvedPolicy]]:
    """The pipeline's topics that have an events suite: their event-time field and policy.

    Raises:
        ConfigError: the configuration asks to block a topic's events.
    """
    from pipelines.operators.routing import RoutingPlan

    out: dict[str, tuple[str, ResolvedPolicy]] = {}
    for topic in RoutingPlan(pipeline).topics:
        suite = suites.get(event_suite_name(topic))
        if suite is not None:
            out[topic] = (suite.time_field, config.input_policy(topic, suite.batch_defaults))
    return out


def gated_sink(
    settings: Settings,
    pipeline: Pipeline,
    end_offsets: Mapping[tuple[str, int], int] | None,
    sink_factory: Any,
    schemas: dict[str, Any],
    forward: frozenset[str],
) -> GatedSinkFunction:
    """The offline sink function with the quality gate inside (see module docs).

    Raises:
        ConfigError: a suite or profile file of the quality directory is invalid
            (checked here, on the client, before the job starts).
    """
    from pipelines.runtime.summary import run_key
    from quality.profile import load_profiles

    quality = settings.quality
    quality_dir = quality.quality_dir()
    suites = load_suite_files((quality_dir or QUALITY_DIR) / "suites")
    views = gated_views(pipeline, suites)
    config = quality.gate_config(settings.stack.state_dir)
    inputs = gated_inputs(pipeline, suites, config)  # a block asked for fails here
    load_profiles(None if quality_dir is None else quality_dir / "profiles")
    skipped = [v.name for v in pipeline.views if v.name not in views]
    if skipped:
        log.warning("no feature suite for views %s: they pass the quality gate unchecked", skipped)
    gate = Gate(
        None if quality_dir is None else str(quality_dir),
        config,
        views,
        tags={"run": run_key(pipeline.name, end_offsets)},
        python=sys.executable,
        inputs=inputs,
    )
    gated = {f"features/{v.name}": v.name for v in pipeline.views}
    gated.update((f"events/{t}", t) for t in inputs)
    return GatedSinkFunction(gate, gated, sink_factory, schemas,
                             metric="offline_writes", forward=forward)


__all__ = ["Gate", "GatedSinkFunction", "gated_inputs", "gated_sink", "gated_views"]
