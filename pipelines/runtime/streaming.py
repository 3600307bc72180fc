"""Compile a pipeline into one PyFlink streaming job, and run it.

The job, step by step (names are the Flink operator names and uids):

    read_<topic> -> admit -> route_enrich -> enrich --+
    (per topic)     |    \\-> route_views -------------+-> views -> offline_sink -> online_sink
    keyed by        |                              (features/<view>, quality gate inside)
    topic|partition +-> events/<topic> --------------------------> offline_sink
                    +-> quarantine (side output) ----------------> offline_sink

With ``quality.enabled: false`` the online sink takes the ``views`` rows directly.

This module only wires steps; the logic lives in :mod:`pipelines.operators`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.config import Settings
from pipelines.errors import JobError
from pipelines.features.definitions import Pipeline
from pipelines.features.registry import load_pipeline
from pipelines.features.validate import check
from pipelines.operators.routing import RoutingPlan
from pipelines.runtime.summary import RunSummary, summarize
from pipelines.sinks.tables import QUARANTINE_SCHEMA, changelog_schema, event_schema
from schemas.store import SchemaStore


def sink_datasets(
    pipeline: Pipeline, plan: RoutingPlan, settings: Settings
) -> tuple[dict[str, Any], dict[str, str]]:
    """Arrow schema and partitioning time column of every dataset the job writes."""
    store = SchemaStore.load(settings.schemas.dir)
    pinned = settings.schemas.reader_versions
    schemas: dict[str, Any] = {"quarantine": QUARANTINE_SCHEMA}
    time_columns = {"quarantine": "quarantined_at"}
    for view in pipeline.views:
        schemas[f"features/{view.name}"] = changelog_schema(view)
        time_columns[f"features/{view.name}"] = "event_timestamp"
    for topic in plan.topics:
        schemas[f"events/{topic}"] = event_schema(store, topic, pinned.get(topic))
        time_columns[f"events/{topic}"] = plan.timestamp_field(topic)
    return schemas, time_columns


def root_cause(exc: BaseException) -> str:
    """The innermost 'Caused by:' line of a Java exception text (or the Python message)."""
    text = str(exc)
    causes = [line.strip() for line in text.splitlines() if line.strip().startswith("Caused by:")]
    last = causes[-1].removeprefix("Caused by:").strip() if causes else text.splitlines()[0]
    return last[:500]


def _dataset_of_changelog(value: Any) -> Any:
    return f"features/{value[0]}", value[1]


def _dataset_of_event(value: Any) -> Any:
    return f"events/{value[0]}", value[2]


def _dataset_of_quarantine(value: Any) -> Any:
    return "quarantine", value


def _first(value: Any) -> str:
    return str(value[0])


def _offline_factory(settings: Settings, time_columns: dict[str, str], writer_id: str) -> Any:
    from pipelines.sinks.s3 import offline_sink

    return offline_sink(settings, writer_id, time_columns)


def _online_factory(settings: Settings, writer_id: str) -> Any:
    from pipelines.sinks.online import OnlineSink

    del writer_id  # the online store is keyed by entity; writers need no distinct names
    return OnlineSink(settings)


def build_job(
    env: Any,
    settings: Settings,
    pipeline_name: str,
    *,
    bounded: bool,
    horizon_ms: int | None,
    end_offsets: dict[tuple[str, int], int] | None = None,
    watermark_emit: str = "periodic",
) -> None:
    """Add the pipeline's steps to ``env`` (a StreamExecutionEnvironment)."""
    from pyflink.common import Types

    from pipelines.operators.flink_functions import (
        PICKLED,
        QUARANTINE,
        AdmitFunction,
        BatchingSinkFunction,
        EnrichFunction,
        RouteFunction,
        ViewsFunction,
        partition_key,
    )
    from pipelines.sources.base import build_all
    from pipelines.sources.kafka import KafkaTopicSource

    pipeline = load_pipeline(pipeline_name)
    plan = RoutingPlan(pipeline)
    schemas_dir = (
        None if settings.schemas.dir is None else str(Path(settings.schemas.dir).resolve())
    )
    sources = [
        KafkaTopicSource(
            topic,
            settings.kafka,
            settings.flink,
            bounded=bounded,
            watermark_emit=watermark_emit,  # type: ignore[arg-type]
            end_offsets=None if end_offsets is None else {
                p: end for (t, p), end in end_offsets.items() if t == topic},
        )
        for topic in plan.topics
    ]
    raw = build_all(env, sources)
    admitted = (
        raw.key_by(partition_key, key_type=Types.STRING())
        .process(
            AdmitFunction(
                pipeline_name,
                schemas_dir,
                settings.schemas.reader_versions,
                settings.flink.out_of_orderness_ms,
            ),
            output_type=PICKLED,
        )
        .name("admit")
        .uid("admit")
    )
    quarantined = admitted.get_side_output(QUARANTINE)
    to_enrich = admitted.flat_map(RouteFunction(pipeline_name, "enrich"), output_type=PICKLED).name(
        "route_enrich"
    )
    enriched = (
        to_enrich.key_by(_first, key_type=Types.STRING())
        .process(EnrichFunction(pipeline_name), output_type=PICKLED)
        .name("enrich")
        .uid("enrich")
    )
    to_views = admitted.flat_map(RouteFunction(pipeline_name, "views"), output_type=PICKLED).name(
        "route_views"
    )
    rows = (
        to_views.union(enriched)
        .key_by(_first, key_type=Types.STRING())
        .process(ViewsFunction(pipeline_name, horizon_ms), output_type=PICKLED)
        .name("views")
        .uid("views")
    )
    schemas, time_columns = sink_datasets(pipeline, plan, settings)
    factory = functools.partial(_offline_factory, settings, time_columns)
    changelog = rows.map(_dataset_of_changelog, output_type=PICKLED).name("to_changelog")
    stored = changelog.union(
        admitted.map(_dataset_of_event, output_type=PICKLED).name("to_event_log"),
        quarantined.map(_dataset_of_quarantine, output_type=PICKLED).name("to_quarantine"),
    ).key_by(_first, key_type=Types.STRING())
    if settings.quality.enabled:
        # The gate runs inside the offline sink, which the changelog crosses anyway, and
        # hands what it lets through on to the online sink (see gate_function's docs).
        from pipelines.operators.gate_function import gated_sink

        forward = frozenset(
            f"features/{v.name}" for v in pipeline.views if settings.online_store.enabled
        )
        offline: Any = gated_sink(settings, pipeline, end_offsets, factory, schemas, forward)
        to_online = (
            stored.process(offline, output_type=PICKLED).name("offline_sink").uid("offline_sink")
        )
    else:
        offline = BatchingSinkFunction(factory, schemas, metric="offline_writes")
        stored.process(offline, output_type=PICKLED).name("offline_sink").uid("offline_sink")
        to_online = changelog
    if settings.online_store.enabled:
        # Rows of one entity come from one views subtask in event-time order and keying by
        # dataset keeps that order; the store itself never replaces a newer value.
        online = functools.partial(_online_factory, settings)
        (
            to_online.key_by(_first, key_type=Types.STRING())
            .process(
                BatchingSinkFunction(
                    online, schemas, batch_rows=5_000, flush_interval_ms=500,
                    metric="online_writes",
                ),
                output_type=PICKLED,
            )
            .name("online_sink")
            .uid("online_sink")
        )


def run_pipeline(
    settings: Settings,
    pipeline_name: str,
    *,
    bounded: bool,
    progress: Callable[[str], None] | None = None,
    watermark_emit: str = "periodic",
    restore_from: str | None = None,
) -> RunSummary | None:
    """Run ``pipeline_name``; for a bounded run, return the accounting summary.

    ``restore_from``: a retained checkpoint or savepoint to resume from (see
    :func:`pipelines.runtime.checkpoints.resolve_restore`). A restored bounded run is
    drained once everything below the end offsets is stored (see
    :mod:`pipelines.runtime.restored_run`).
    """
    from pipelines.runtime.flink_env import create_env
    from pipelines.runtime.horizon import max_timestamp
    from pipelines.sources.offsets import kafka_python_config, true_end_offsets

    say = progress or (lambda _m: None)
    pipeline = load_pipeline(pipeline_name)
    check(pipeline, SchemaStore.load(settings.schemas.dir))
    plan = RoutingPlan(pipeline)
    end_offsets = horizon = None
    if bounded:
        end_offsets = true_end_offsets(settings.kafka, plan.topics)
        total = sum(end_offsets.values())
        say(f"bounded run over {total:,} records in {len(plan.topics)} topics")
        horizon = max_timestamp(end_offsets, **kafka_python_config(settings.kafka))
    if settings.online_store.enabled:
        from pipelines.feast_repo import apply

        say(f"registering the feature views with Feast ({settings.online_store.type} online store)")
        apply(settings, pipeline)
    # A failing job must fail, not retry forever: a few quick restarts (which also
    # exercise recovery from the last checkpoint), then the error reaches the caller.
    extra = {
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "3",
        "restart-strategy.fixed-delay.delay": "2 s",
    }
    # The Kafka connector never ends a restored bounded job by itself (FLINK-31006): such a
    # run is started asynchronously and drained from here (pipelines.runtime.restored_run),
    # watching its task metrics on a REST endpoint of its own.
    drain = bounded and restore_from is not None
    if drain:
        from pipelines.runtime.restored_run import DRAIN_CONF
        from pipelines.stack.process import free_port

        rest_port = free_port()
        extra.update({**DRAIN_CONF, "rest.port": str(rest_port)})
    env = create_env(settings, extra=extra, restore_from=restore_from)
    build_job(
        env,
        settings,
        pipeline_name,
        bounded=bounded,
        horizon_ms=horizon,
        end_offsets=end_offsets,
        watermark_emit=watermark_emit,
    )
    say(
        f"starting Flink job {pipeline.name} (parallelism {settings.flink.parallelism}, "
        f"{settings.flink.execution_mode} mode)"
        + (f", resumed from {restore_from}" if restore_from else "")
    )
    try:
        if drain:
            from pipelines.cluster.rest import FlinkRest
            from pipelines.runtime.restored_run import finish_restored_bounded

            assert end_offsets is not None
            client = env.execute_async(f"livefeat-{pipeline.name}")
            finish_restored_bounded(client, settings, end_offsets,
                                    FlinkRest(f"http://127.0.0.1:{rest_port}"), progress=say)
        else:
            env.execute(f"livefeat-{pipeline.name}")
    except JobError:
        raise
    except Exception as exc:  # Py4J wraps every Java failure in one exception type
        raise JobError(
            f"job failed: {root_cause(exc)}",
            where=f"pipeline {pipeline.name}"
            + (f", restored from {restore_from}" if restore_from else ""),
            fix=f"see the Flink log in {settings.stack.state_dir}/flink-logs for the full trace",
        ) from exc
    if end_offsets is None:
        return None
    from pipelines.runtime.summary import gate_results_dir
    from pipelines.sinks.s3 import s3_options_for

    return summarize(
        pipeline,
        settings.offline_store.uri,
        end_offsets,
        s3_options=s3_options_for(settings),
        horizon_ms=horizon,
        gate_results=gate_results_dir(settings),
    )
