"""Cluster benchmark: the reference pipeline on a local Flink cluster, next to the embedded run.

Starts a private stack (broker + S3) on free ports, publishes N generated events (the same
traffic as bench/stream.py), and a local Flink session cluster in a temporary state
directory, on free ports (a JobManager and two TaskManagers with two slots each, the shape
of `livefeat cluster up`). Then, over that same input, it times the bounded reference job

* on the embedded Flink runtime at parallelism 1: `livefeat run marketplace --bounded` in a
  new process, as a user runs it, from its start to its exit;
* on the cluster at each parallelism, from `flink run` (`livefeat submit marketplace
  --bounded`) to the job's end time as the JobManager reports it (FINISHED), after one
  warm-up job (the TaskManagers keep their Python interpreter between jobs, so the first
  job on a fresh cluster also pays their imports; its time is printed too).

The fixed start-up cost of each (JVM and Python start, job graph, Feast registration,
Great Expectations import, sources discovering their partitions) is measured by the same
run over a tiny input in a second private stack, and reported separately: "after start-up"
is (records - tiny records) / (seconds - tiny seconds). Every run must account for every
record it read (accepted or quarantined), checked from what it wrote. The cluster is stopped
by process id at the end (ClusterManager.down), the stacks too.

Run:  .venv/bin/python bench/cluster.py [--events 20000] [--parallelism 1 2] [--tiny 200]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from bench.stream import baseline, publish, settings_for
from pipelines.cluster.conf import default_options
from pipelines.cluster.manager import ClusterManager
from pipelines.cluster.rest import FlinkRest
from pipelines.cluster.submit import resolve_target, submit
from pipelines.config import Settings
from pipelines.jobs.marketplace import PIPELINE
from pipelines.machine import machine
from pipelines.operators.routing import RoutingPlan
from pipelines.runtime.horizon import max_timestamp
from pipelines.runtime.summary import summarize
from pipelines.sources.offsets import kafka_python_config, true_end_offsets
from pipelines.stack import StackManager, override_stack
from pipelines.stack.process import free_port

ROOT = Path(__file__).resolve().parents[1]
JOB_TIMEOUT_S = 3_600.0
TASKMANAGERS = 2
SLOTS = 2


@dataclass(frozen=True)
class Input:
    """A private stack holding published traffic."""

    name: str
    root: Path
    manager: StackManager
    settings: Settings
    end_offsets: dict[tuple[str, int], int]
    horizon_ms: int


@dataclass(frozen=True)
class Timing:
    """One bounded run: records it read, seconds from start to end, and for a cluster run
    the seconds the Flink client took to submit it and the job's own duration (from the
    JobManager's start time to its end time)."""

    records: int
    seconds: float
    submit_s: float | None = None
    job_s: float | None = None


def start_input(root: Path, name: str, events: int) -> Input:
    """A private stack under ``root/name`` with ``events`` published records."""
    home = root / name
    base = override_stack(settings_for(home, 1), broker_port=free_port(), s3_port=free_port(),
                          state_dir=home / "state")
    manager = StackManager(base)
    settings = manager.up().apply(base)
    config = home / "livefeat.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude={"source_file"})))
    publish(settings, events, config)
    ends = true_end_offsets(settings.kafka, RoutingPlan(PIPELINE).topics)
    horizon = max_timestamp(ends, **kafka_python_config(settings.kafka))
    if horizon is None:
        raise SystemExit(f"{name}: nothing was published")
    return Input(name, home, manager, settings, ends, horizon)


def run_settings(source: Input, label: str, parallelism: int) -> tuple[Settings, Path]:
    """Settings of one run over ``source``: its own stores, checkpoints and gate results
    (absolute paths, which every process of the cluster sees), written to a settings file.

    Runs over the same input share a gate run name (it derives from the end offsets), so
    each keeps its gate results apart; else one run's summary would count another's."""
    settings = source.settings
    own = settings_for(source.root / label, parallelism)
    settings = settings.model_copy(update={
        "flink": own.flink, "offline_store": own.offline_store, "online_store": own.online_store,
        "quality": settings.quality.model_copy(
            update={"results_dir": source.root / label / "quality"}),
    })
    config = source.root / label / "livefeat.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude={"source_file"})))
    return settings, config


def checked(source: Input, settings: Settings, label: str) -> int:
    """Records the run read, after checking that it accounted for every one of them."""
    summary = summarize(PIPELINE, settings.offline_store.uri, source.end_offsets,
                        horizon_ms=source.horizon_ms)
    if not summary.balanced or summary.total_read != sum(source.end_offsets.values()):
        raise SystemExit(f"{label}: not every record is accounted for: {summary.as_dict()}")
    return summary.total_read


def run_embedded(source: Input) -> Timing:
    """``livefeat run marketplace --bounded`` (embedded Flink, parallelism 1) in a new process,
    as a user runs it: the process's start (imports, JVM) is part of the time."""
    settings, config = run_settings(source, "embedded", 1)
    argv = [sys.executable, "-c", "from pipelines.cli.main import main; main()",
            "--config", str(config), "run", "marketplace", "--bounded"]
    log = config.with_name("run.log")
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                              check=False).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{source.name} embedded run failed ({code}):\n{log.read_text()[-3000:]}")
    return Timing(checked(source, settings, f"{source.name} embedded"), seconds)


def run_cluster(source: Input, *, cluster: ClusterManager, parallelism: int,
                label: str = "") -> Timing:
    """The bounded job submitted to ``cluster``, timed from submit to FINISHED."""
    label = label or f"cluster-p{parallelism}"
    settings, config = run_settings(source, label, parallelism)
    rest_url = cluster.rest_url() or ""
    rest = FlinkRest(rest_url)
    target, args = resolve_target("marketplace", config=config, bounded=True)
    started = time.time()
    submission = submit(target, rest_url.removeprefix("http://"), log_dir=cluster.paths.logs,
                        conf_dir=cluster.paths.conf, job_args=args)
    submitted = time.time()
    rest.wait_for_state(submission.job_id, {"FINISHED"}, timeout=JOB_TIMEOUT_S, poll=0.2)
    job = rest.job(submission.job_id)
    ended = int(job["end-time"]) / 1000
    return Timing(checked(source, settings, f"{source.name} {label}"), ended - started,
                  submitted - started, int(job["duration"]) / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--parallelism", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tiny", type=int, default=200,
                        help="events of the run that measures the fixed start-up cost")
    args = parser.parse_args()
    if max(args.parallelism) > TASKMANAGERS * SLOTS:
        parser.error(f"the cluster has {TASKMANAGERS * SLOTS} slots")
    root = Path(tempfile.mkdtemp(prefix="livefeat-bench-cluster-"))
    inputs: list[Input] = []
    cluster = ClusterManager(root / "cluster")
    try:
        print(f"machine: {machine()}")
        print(f"publishing {args.events:,} events (and {args.tiny:,} for the start-up runs) ...",
              flush=True)
        inputs.append(start_input(root, "main", args.events))
        inputs.append(start_input(root, "tiny", args.tiny))
        main_input, tiny_input = inputs
        up = cluster.up(default_options(taskmanagers=TASKMANAGERS, slots=SLOTS,
                                        rest_port=free_port(), rpc_port=free_port()))
        print(f"cluster: {up.taskmanagers} TaskManagers, {up.slots} slots, up in "
              f"{up.seconds:.1f} s", flush=True)
        n, seconds = baseline(main_input.settings)
        print(f"baseline (kafka-python + dicts, 1 process): {n:,} records in {seconds:.1f} s "
              f"= {n / seconds:,.0f} records/s", flush=True)

        # A session cluster's TaskManagers keep their Python interpreter between jobs, so
        # the first job on a fresh cluster also pays their imports: a warm-up job first.
        warm = run_cluster(tiny_input, cluster=cluster, parallelism=max(args.parallelism),
                           label="warm-up")
        print(f"cluster: warm-up job (first on the fresh cluster, parallelism "
              f"{max(args.parallelism)}): {warm.records:,} records in {warm.seconds:.1f} s",
              flush=True)
        runs: list[tuple[str, Timing, Timing]] = []
        plans: list[tuple[str, Callable[[Input], Timing]]] = [
            ("embedded, parallelism 1", run_embedded),
            *((f"cluster, parallelism {p}", functools.partial(run_cluster, cluster=cluster,
                                                              parallelism=p))
              for p in args.parallelism),
        ]
        for name, plan in plans:
            tiny = plan(tiny_input)
            print(f"{name}: start-up run, {tiny.records:,} records in {tiny.seconds:.1f} s",
                  flush=True)
            full = plan(main_input)
            print(f"{name}: {full.records:,} records in {full.seconds:.1f} s", flush=True)
            runs.append((name, full, tiny))

        print()
        print(f"{'runtime':<24} {'records':>8} {'seconds':>8} {'records/s':>10} "
              f"{'start-up s':>11} {'after start-up rec/s':>21} {'submit s':>9} {'job s':>6}")
        for name, full, tiny in runs:
            extra = full.seconds - tiny.seconds
            steady = (f"{(full.records - tiny.records) / extra:,.0f}" if extra > 0
                      else "n/a (noise)")
            submit_s = "" if full.submit_s is None else f"{full.submit_s:.1f}"
            job_s = "" if full.job_s is None else f"{full.job_s:.1f}"
            print(f"{name:<24} {full.records:>8,} {full.seconds:>8.1f} "
                  f"{full.records / full.seconds:>10,.0f} {tiny.seconds:>11.1f} "
                  f"{steady:>21} {submit_s:>9} {job_s:>6}")
        print("records/s: end to end, start-up included; start-up s: the same run over "
              f"{sum(tiny_input.end_offsets.values()):,} records; submit s: the Flink client, "
              "from `flink run` to the job id; job s: the job's duration at the JobManager")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        cluster.down()
        for source in inputs:
            source.manager.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
