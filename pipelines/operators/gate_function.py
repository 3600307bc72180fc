"""The quality gate as a step of the Flink job: micro-batches of changelog rows, one verdict each.

:class:`GateFunction` sits between the ``views`` step and the sinks, keyed by view.
It buffers ``(view, row)`` changelog rows in keyed ``ListState`` (checkpointed: a
crash loses none), cuts micro-batches exactly as :class:`quality.MicroBatcher` does
(a batch closes at ``batch_max_rows`` rows, or when a row's event time is
``batch_max_ms`` or more after the batch's first row), and calls
:meth:`quality.QualityGate.check_features` once per batch:

* ``pass`` / ``warn``: the rows go downstream unchanged, in the order they came;
* ``block``: the gate's result store holds them (``held/<view>/<batch_id>.json``);
  they reach no store until ``livefeat quality release``.

Rows of one millisecond arrive together: the ``views`` step emits a row when the
watermark passes its event time, and forwards the watermark after the rows. So once
the watermark passes a batch's last millisecond (``first + batch_max_ms - 1``) no
row of that batch can still come, and an event-time timer there closes it. At the
end of bounded input the watermark jumps to the maximum and closes the last batch.
Batch ids are ``<view>-<first event time>-<sequence>`` with the sequence in keyed
state, so a replay after a restore cuts and names the same batches again (and
re-validating one overwrites its held file; readers keep one result per batch id).

Integrity failures (e.g. a negative count) and batches Great Expectations cannot
evaluate (``gate_error``) fail the batch like drift does, so they take the view's
action: nothing is dropped; rows not forwarded are in a held batch, counted in the
results. Views without a feature suite pass through unchanged (the job logs which).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from pipelines.config import Settings
from pipelines.features.definitions import Pipeline
from pipelines.operators.flink_functions import PICKLED
from pipelines.operators.metrics import PipelineMetrics
from quality.batcher import MicroBatch
from quality.config import GateConfig

log = logging.getLogger("livefeat.quality")

STEP = "gate"
"""Operator name and uid of the gate step."""


@dataclass
class _Open:
    """The open batch of one view, mirrored in memory (``first_ms`` None: no open batch)."""

    first_ms: int | None
    seq: int
    count: int


class GateFunction(KeyedProcessFunction):
    """Keyed by view: ``(view, row)`` in, the rows of passing batches out (see module docs).

    Args:
        quality_dir: directory with ``suites/`` and ``profiles/`` (None: the shipped ones).
        config: the gate settings, ``results_dir`` absolute (workers may run elsewhere).
        views: the views to validate; rows of other views pass through.
        tags: stored with every result (``{"run": ...}`` names the run).
    """

    def __init__(
        self,
        quality_dir: str | None,
        config: GateConfig,
        views: list[str],
        tags: dict[str, str] | None = None,
    ) -> None:
        self.quality_dir = quality_dir
        self.config = config
        self.views = frozenset(views)
        self.tags = dict(tags or {})
        self.gate: Future[Any] | None = None  # the QualityGate, loading on the gate's thread

    def open(self, runtime_context: RuntimeContext) -> None:
        self.rows = runtime_context.get_list_state(ListStateDescriptor("gate_rows", PICKLED))
        # (first event time of the open batch or None, sequence of the last batch opened)
        self.batch = runtime_context.get_state(ValueStateDescriptor("gate_batch", PICKLED))
        # What the state says, per view, read once per task attempt: after a restore the
        # count is recomputed from the restored rows. Saves a state call per row.
        self.open_batches: dict[str, _Open] = {}
        self.policies = {v: self.config.policy(v) for v in self.views}
        # Great Expectations runs on a thread Python started, never on the task thread:
        # in thread mode the task thread is the JVM's, and importing scipy's pybind11
        # extensions (GX imports scipy.stats) deadlocks there on the GIL. It loads in the
        # background (seconds) while the step already buffers rows; the first validation
        # waits for it.
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livefeat-gate")
        quality_dir = None if self.quality_dir is None else Path(self.quality_dir)
        self.gate = self.worker.submit(_load_gate, quality_dir, self.config, self.tags)
        self.metrics = PipelineMetrics(runtime_context.get_metrics_group())

    def close(self) -> None:
        if self.gate is not None:
            self.metrics.push()
            self.worker.shutdown(wait=False)

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

    def _close(self, view: str) -> list[Any]:
        """Validate the open batch of ``view``; return what goes downstream."""
        current = self._current(view)
        if current.first_ms is None:
            return []
        rows = list(self.rows.get() or [])
        batch = MicroBatch(view, current.first_ms, rows, seq=current.seq)
        self.rows.clear()
        current.first_ms, current.count = None, 0
        self.batch.update((None, current.seq))
        if not rows:
            return []
        assert self.gate is not None  # set in open()
        started = time.perf_counter()
        verdict = self.worker.submit(_check, self.gate, view, rows, batch.batch_id).result()
        metrics = self.metrics
        metrics.inc("gate_batches", label=("outcome", verdict.action))
        metrics.inc("gate_rows", len(rows), label=("outcome", verdict.action))
        metrics.inc("gate_validation_us", int((time.perf_counter() - started) * 1e6))
        if not verdict.judged:
            metrics.inc("gate_not_judged")
        if verdict.action == "block":
            return []  # check_features has written held/<view>/<batch_id>.json
        return [(view, row) for row in rows]

    # -- Flink callbacks -----------------------------------------------------------------
    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Any:
        view, row = value
        if view not in self.views:
            yield value
            return
        t = int(row["event_timestamp"])
        policy = self.policies[view]
        current = self._current(view)
        if current.first_ms is not None and t - current.first_ms >= policy.batch_max_ms:
            yield from self._close(view)
        if current.first_ms is None:
            self._start(view, t, ctx)
        self.rows.add(row)
        current.count += 1
        if current.count >= policy.batch_max_rows:
            yield from self._close(view)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        view = str(ctx.get_current_key())
        current = self._current(view)
        # A timer of a batch that closed by size (or by a later row) finds a newer batch,
        # or none: only the batch whose last millisecond the watermark passed closes.
        if current.first_ms is not None and (
            current.first_ms + self.policies[view].batch_max_ms - 1 <= timestamp
        ):
            yield from self._close(view)


def _load_gate(quality_dir: Path | None, config: GateConfig, tags: dict[str, str]) -> Any:
    from quality.gate import QualityGate

    started = time.perf_counter()
    gate = QualityGate.load(quality_dir, config)
    gate.tags.update(tags)
    log.info("quality gate loaded in %.1f s", time.perf_counter() - started)
    return gate


def _check(loading: Future[Any], view: str, rows: list[dict[str, Any]], batch_id: str) -> Any:
    """Validate on the gate's thread (the load ran before it on the same thread)."""
    return loading.result().check_features(view, rows, batch_id)


def gated_views(pipeline: Pipeline, quality_dir: Path | None) -> list[str]:
    """The pipeline's views that have a feature suite (the others pass the gate unchecked)."""
    from quality.suites import QUALITY_DIR, feature_suite_name, load_suite_files

    suites = load_suite_files((quality_dir or QUALITY_DIR) / "suites")
    return [v.name for v in pipeline.views if feature_suite_name(v.name) in suites]


def gate_step(
    rows: Any,
    settings: Settings,
    pipeline: Pipeline,
    end_offsets: Mapping[tuple[str, int], int] | None,
) -> Any:
    """Add the gate after ``rows`` (the ``views`` step's stream); returns its output stream.

    Raises:
        ConfigError: a suite or profile file of the quality directory is invalid
            (checked here, on the client, before the job starts).
    """
    from pyflink.common import Types

    from pipelines.runtime.summary import run_key
    from quality.profile import load_profiles

    quality = settings.quality
    quality_dir = quality.quality_dir()
    views = gated_views(pipeline, quality_dir)
    load_profiles(None if quality_dir is None else quality_dir / "profiles")
    skipped = [v.name for v in pipeline.views if v.name not in views]
    if skipped:
        log.warning("no feature suite for views %s: they pass the quality gate unchecked", skipped)
    function = GateFunction(
        None if quality_dir is None else str(quality_dir),
        quality.gate_config(settings.stack.state_dir),
        views,
        tags={"run": run_key(pipeline.name, end_offsets)},
    )
    return (
        rows.key_by(_view_of, key_type=Types.STRING())
        .process(function, output_type=PICKLED)
        .name(STEP)
        .uid(STEP)
    )


def _view_of(value: Any) -> str:
    return str(value[0])


__all__ = ["STEP", "GateFunction", "gate_step", "gated_views"]
