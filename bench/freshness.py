"""Freshness benchmark: Kafka append time to changelog row emitted, at a fixed input rate.

Starts a private stack (broker + S3) on free ports and the reference pipeline unbounded (a
subprocess, as an operator runs it). Then it publishes generated traffic at a fixed rate with
each record's event time (and Kafka timestamp) set to the wall clock at the moment it is
appended, so that for a changelog row caused by an event, freshness is simply
``created_timestamp - event_timestamp``: the row's emission time minus the event's append time.
Rows at expiration times (no event caused them) are left out.

A row for time T can only be final once the watermark passes T, i.e. once every partition has
seen an event later than T + the out-of-orderness bound (or has been idle for
``--idleness-ms``); freshness is therefore at least the bound (``--bound-ms``, default 500 ms
here; the pipeline's default is 5 s) plus the periodic watermark interval (200 ms).

Run:  .venv/bin/python bench/freshness.py [--rate 200] [--seconds 60] [--bound-ms 500]
Prints p50/p90/p99/max freshness and the rows measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import Settings
from pipelines.generator.options import GeneratorOptions
from pipelines.generator.stream import generate_events
from pipelines.jobs.marketplace import PIPELINE
from pipelines.machine import machine
from pipelines.operators.routing import RoutingPlan
from pipelines.sinks.parquet import read_dataset
from pipelines.sources.offsets import kafka_python_config
from pipelines.stack import StackManager, override_stack
from pipelines.stack.process import free_port
from schemas.codec import SingleObjectCodec
from schemas.store import SchemaStore


def percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def publish_live(settings: Settings, rate: float, seconds: float) -> set[int]:
    """Publish valid generated records at ``rate``/s with event time = append wall time."""
    from kafka import KafkaProducer

    codec = SingleObjectCodec(SchemaStore.load(settings.schemas.dir))
    plan = RoutingPlan(PIPELINE)
    producer = KafkaProducer(**kafka_python_config(settings.kafka), linger_ms=5, acks=1)
    times: set[int] = set()
    records = (r for r in generate_events(GeneratorOptions(seed=3, events=10_000_000))
               if r.kind == "valid" and r.record is not None)
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate) + 1
        while sent < due:
            rec = next(records)
            record = dict(rec.record or {})
            now = int(time.time() * 1000)
            record[plan.timestamp_field(rec.subject)] = now
            value = codec.encode(rec.subject, record)
            producer.send(rec.topic, key=rec.key, value=value, partition=rec.partition,
                          timestamp_ms=now)
            times.add(now)
            sent += 1
        time.sleep(0.001)
    producer.flush()
    producer.close()
    return times


def main() -> None:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0, help="records per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to publish")
    parser.add_argument("--bound-ms", type=int, default=500, help="out-of-orderness bound")
    parser.add_argument("--startup-s", type=float, default=30.0,
                        help="wait this long for the job to start before publishing")
    parser.add_argument("--idleness-ms", type=int, default=1000,
                        help="a partition without records this long stops holding the watermark")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="livefeat-fresh-"))
    base = Settings()
    base = base.model_copy(update={
        "flink": base.flink.model_copy(update={
            "checkpoint_dir": root / "ckpt", "out_of_orderness_ms": args.bound_ms,
            "idleness_ms": args.idleness_ms}),
        "offline_store": base.offline_store.model_copy(update={"uri": str(root / "offline")}),
        "online_store": base.online_store.model_copy(update={"sqlite_path": root / "online.db"}),
    })
    base = override_stack(base, broker_port=free_port(), s3_port=free_port(),
                          state_dir=root / "state")
    manager = StackManager(base)
    job = None
    try:
        settings = manager.up().apply(base)
        config = root / "livefeat.yaml"
        config.write_text(yaml.safe_dump(settings.model_dump(mode="json",
                                                              exclude={"source_file"})))
        print(f"machine: {machine()}")
        job = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli.main", "--config", str(config), "run",
             "marketplace"],
            stdout=subprocess.DEVNULL, stderr=(root / "job.log").open("wb"),
            start_new_session=True,
        )
        time.sleep(args.startup_s)  # JVM, plan and Feast apply happen before traffic is timed
        print(f"publishing {args.rate:,.0f} records/s for {args.seconds:.0f} s "
              f"(bound {args.bound_ms} ms) ...", flush=True)
        times = publish_live(settings, args.rate, args.seconds)
        time.sleep(10)  # let the tail through; the last bound's worth of rows is not final
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        lags = []
        for view in PIPELINE.views:
            try:
                table = read_dataset(settings.offline_store.uri, f"features/{view.name}",
                                     columns=["event_timestamp", "created_timestamp"])
            except FileNotFoundError:
                continue
            for t, c in zip(table.column("event_timestamp").cast("int64").to_pylist(),
                            table.column("created_timestamp").cast("int64").to_pylist(),
                            strict=True):
                if t in times:
                    lags.append(c - t)
        if not lags:
            log = (root / "job.log").read_text()[-2000:]
            raise SystemExit(f"no changelog rows were written; the job said:\n{log}")
        print(f"freshness over {len(lags):,} event-caused changelog rows: "
              f"p50 {percentile(lags, 0.5):,} ms, p90 {percentile(lags, 0.9):,} ms, "
              f"p99 {percentile(lags, 0.99):,} ms, max {max(lags):,} ms")
    finally:
        if job is not None and job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        manager.down()
        if sys.exc_info()[0] is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
