"""Build and run a livefeat pipeline inside the Flink client: the program ``flink run -pym`` runs.

``livefeat submit marketplace`` resolves to this module::

    flink run -m HOST:PORT ... -pym pipelines.runtime.entry \\
        --pipeline marketplace --config /abs/livefeat.yaml [--bounded]

and a Kubernetes application cluster can run it the same way (Flink's
``PythonDriver`` with ``-pym pipelines.runtime.entry`` and these arguments).
It does what ``livefeat run`` does before the job
starts (validate the definitions against the schemas; for a bounded run, read
the true end offsets and the final watermark; register the Feast objects when
the online store is on), builds the job with
:func:`pipelines.runtime.streaming.build_job` on the environment of
:func:`pipelines.runtime.flink_env.create_env`, and executes it: detached, the
client returns once the JobManager accepted the job.

On a cluster the job's processes are not the client: every path the job
writes must be one they all see. Relative local paths in the settings are
made absolute here (against the client's working directory), which suits a
cluster on this machine; on Kubernetes use ``s3://`` for
``offline_store.uri`` and ``flink.checkpoint_dir``.

The restart strategy is the cluster's when its configuration
(``$FLINK_CONF_DIR/config.yaml``, as the client sees it) sets one, so a
cluster's operators decide how a job survives a lost TaskManager; otherwise
livefeat's default (a few restarts, then the job fails with the cause).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipelines.config import Settings, load_config
from pipelines.errors import LivefeatError
from pipelines.features.registry import DEFAULT_PIPELINE

MODULE = "pipelines.runtime.entry"
"""This module's name, for ``flink run -pym``."""

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The entry's arguments: ``--pipeline NAME --config FILE [--bounded]``.

    >>> args = parse_args(["--pipeline", "marketplace", "--bounded"])
    >>> args.pipeline, args.config, args.bounded
    ('marketplace', None, True)
    """
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", default=DEFAULT_PIPELINE,
                        help="pipeline name (marketplace) or package.module:ATTRIBUTE")
    parser.add_argument("--config", default=None,
                        help="livefeat settings file (default: $LIVEFEAT_CONFIG, ./livefeat.yaml)")
    parser.add_argument("--bounded", action="store_true",
                        help="process what the topics hold now, then finish")
    return parser.parse_args(list(argv))


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else Path(path).expanduser().resolve()


def absolute_paths(settings: Settings) -> Settings:
    """``settings`` with every relative local path made absolute; URIs stay as they are.

    The job's functions are pickled with the settings and run in TaskManagers
    whose working directory is not the client's.
    """
    offline = settings.offline_store.uri
    if not _URI.match(offline):
        offline = str(Path(offline).expanduser().resolve())
    checkpoint_dir = settings.flink.checkpoint_dir
    if not (isinstance(checkpoint_dir, str) and _URI.match(checkpoint_dir)):
        checkpoint_dir = Path(checkpoint_dir).expanduser().resolve()
    online = settings.online_store
    state_dir = _absolute(settings.stack.state_dir)
    return settings.model_copy(update={
        "stack": settings.stack.model_copy(update={"state_dir": state_dir}),
        "flink": settings.flink.model_copy(update={"checkpoint_dir": checkpoint_dir}),
        "offline_store": settings.offline_store.model_copy(update={"uri": offline}),
        "online_store": online.model_copy(update={
            "sqlite_path": _absolute(online.sqlite_path),
            "registry_path": _absolute(online.registry_path),
        }),
        "schemas": settings.schemas.model_copy(update={"dir": _absolute(settings.schemas.dir)}),
        "quality": settings.quality.model_copy(update={
            "dir": _absolute(settings.quality.dir),
            "results_dir": _absolute(settings.quality.results_dir),
        }),
    })


def cluster_restart_strategy(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``restart-strategy.*`` keys of the client's Flink configuration (may be empty).

    Reads ``$FLINK_CONF_DIR/config.yaml`` (nested or flat keys). A missing or
    unreadable file gives no keys.
    """
    from pipelines.cluster.conf import flatten

    env = os.environ if environ is None else environ
    conf_dir = env.get("FLINK_CONF_DIR")
    if not conf_dir:
        return {}
    try:
        data = yaml.safe_load((Path(conf_dir) / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: str(value) for key, value in flatten(data).items()
            if key.startswith("restart-strategy.") and value is not None}


def _say(message: str) -> None:
    print(f"livefeat: {message}", flush=True)


def prepare(settings: Settings, pipeline_name: str, *,
            bounded: bool) -> tuple[dict[tuple[str, int], int] | None, int | None]:
    """Checks and set-up before the job is built.

    Returns:
        for a bounded run, the true end offsets and the horizon (final watermark);
        ``(None, None)`` otherwise.

    Raises:
        DefinitionError: the pipeline is unknown or does not match the schemas.
        StackError: the broker did not answer (bounded runs read the end offsets).
    """
    from pipelines.features.registry import load_pipeline
    from pipelines.features.validate import check
    from pipelines.operators.routing import RoutingPlan
    from schemas.store import SchemaStore

    pipeline = load_pipeline(pipeline_name)
    check(pipeline, SchemaStore.load(settings.schemas.dir))
    end_offsets: dict[tuple[str, int], int] | None = None
    horizon: int | None = None
    if bounded:
        from pipelines.runtime.horizon import max_timestamp
        from pipelines.sources.offsets import kafka_python_config, true_end_offsets

        topics = RoutingPlan(pipeline).topics
        end_offsets = true_end_offsets(settings.kafka, topics)
        horizon = max_timestamp(end_offsets, **kafka_python_config(settings.kafka))
        _say(f"bounded run over {sum(end_offsets.values()):,} records in {len(topics)} topics, "
             f"final watermark {horizon}")
    if settings.online_store.enabled:
        from pipelines.feast_repo import apply

        _say(f"registering the feature views with Feast ({settings.online_store.type})")
        apply(settings, pipeline)
    return end_offsets, horizon


def build(settings: Settings, pipeline_name: str, *, bounded: bool,
          environ: Mapping[str, str] | None = None) -> Any:
    """The job's ``StreamExecutionEnvironment``, ready to ``execute``."""
    from pipelines.runtime.flink_env import create_env
    from pipelines.runtime.streaming import build_job

    end_offsets, horizon = prepare(settings, pipeline_name, bounded=bounded)
    env = create_env(settings, extra=cluster_restart_strategy(environ))
    build_job(env, settings, pipeline_name, bounded=bounded, horizon_ms=horizon,
              end_offsets=end_offsets)
    return env


def job_name(pipeline_name: str) -> str:
    """The Flink job name of a pipeline, as ``livefeat run`` names it."""
    from pipelines.features.registry import load_pipeline

    return f"livefeat-{load_pipeline(pipeline_name).name}"


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments, build the job and execute it (the ``flink run`` client calls this).

    A livefeat error (bad settings, unknown pipeline, broker down) is printed
    as ``error: ...`` and exits with status 2, so the client fails with that line.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = absolute_paths(load_config(args.config))
        env = build(settings, args.pipeline, bounded=args.bounded)
        name = job_name(args.pipeline)
    except LivefeatError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    _say(f"submitting {name} (parallelism {settings.flink.parallelism}, "
         f"{settings.flink.execution_mode} mode{', bounded' if args.bounded else ''})")
    env.execute(name)


if __name__ == "__main__":
    main()
