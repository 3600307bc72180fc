"""Streaming benchmark: end-to-end throughput of the reference pipeline on the embedded Flink.

Starts a private stack (broker + S3) on free ports, publishes N generated events, then runs the
bounded reference job (decode, row rules, lateness, enrichment, exact windows, changelog, offline
and online sinks) at each parallelism, and in the same run the simplest alternative a user would
write: one kafka-python process that reads, decodes and computes the same features in Python
dictionaries (the batch engine, no Flink, no state backend, no sinks).

Run:  .venv/bin/python bench/stream.py [--events 50000] [--parallelism 1 2]
Prints events/s for each, and the job's fixed start-up cost (a run over a tiny input).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import Settings
from pipelines.features.registry import load_pipeline
from pipelines.generator.readback import read_to_end
from pipelines.machine import machine
from pipelines.runtime.batch import run_pipeline as run_batch
from pipelines.runtime.streaming import run_pipeline
from pipelines.sources.offsets import kafka_python_config
from pipelines.stack import StackManager, override_stack
from pipelines.stack.process import free_port
from pipelines.topics import REFERENCE_TOPICS
from schemas.codec import SingleObjectCodec
from schemas.store import SchemaStore


def settings_for(root: Path, parallelism: int) -> Settings:
    base = Settings()
    return base.model_copy(
        update={
            "flink": base.flink.model_copy(
                update={"parallelism": parallelism, "checkpoint_dir": root / f"ckpt-{parallelism}"}
            ),
            "offline_store": base.offline_store.model_copy(
                update={"uri": str(root / f"offline-{parallelism}")}
            ),
            "online_store": base.online_store.model_copy(
                update={"sqlite_path": root / f"online-{parallelism}.db"}
            ),
        }
    )


def publish(settings: Settings, events: int, config: Path) -> None:
    from click.testing import CliRunner

    from pipelines.cli.main import cli

    result = CliRunner().invoke(
        cli,
        [
            "--config",
            str(config),
            "generate",
            "--events",
            str(events),
            "--seed",
            "3",
            "--out-of-order",
            "0.02",
            "--quiet",
        ],
    )
    if result.exit_code != 0:
        raise SystemExit(result.output)


def baseline(settings: Settings) -> tuple[int, float]:
    """kafka-python consumer + decode + the same features in plain Python, one process."""
    start = time.perf_counter()
    codec = SingleObjectCodec(SchemaStore.load())
    decoders = {t: codec.decoder(t) for t in REFERENCE_TOPICS}
    events: dict[str, list[dict[str, Any]]] = {t: [] for t in REFERENCE_TOPICS}
    n = 0
    for record in read_to_end(kafka_python_config(settings.kafka), list(REFERENCE_TOPICS)):
        n += 1
        try:
            rec = decoders[record.topic].decode(record.value)
        except Exception:
            continue
        rec["_partition"], rec["_offset"] = record.partition, record.offset
        events[record.topic].append(rec)
    run_batch(load_pipeline("marketplace"), events)
    return n, time.perf_counter() - start


def main() -> None:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--parallelism", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="livefeat-bench-"))
    base = override_stack(
        settings_for(root, 1),
        broker_port=free_port(),
        s3_port=free_port(),
        state_dir=root / "state",
    )
    manager = StackManager(base)
    try:
        stack = manager.up()
        config = root / "livefeat.yaml"
        config.write_text(
            yaml.safe_dump(stack.apply(base).model_dump(mode="json", exclude={"source_file"}))
        )
        print(f"machine: {machine()}")
        print(f"publishing {args.events:,} events ...", flush=True)
        publish(stack.apply(base), args.events, config)
        n, seconds = baseline(stack.apply(base))
        print(
            f"baseline (kafka-python + dicts, 1 process): {n:,} records in {seconds:.1f} s "
            f"= {n / seconds:,.0f} records/s"
        )
        for p in args.parallelism:
            settings = stack.apply(
                override_stack(
                    settings_for(root, p),
                    broker_port=base.stack.broker_port,
                    s3_port=base.stack.s3_port,
                    state_dir=root / "state",
                )
            )
            started = time.perf_counter()
            summary = run_pipeline(settings, "marketplace", bounded=True)
            seconds = time.perf_counter() - started
            assert summary is not None and summary.balanced
            rows = sum(summary.changelog_rows.values())
            print(
                f"flink job, parallelism {p}: {summary.total_read:,} records in {seconds:.1f} s "
                f"= {summary.total_read / seconds:,.0f} records/s end to end "
                f"({rows:,} changelog rows, start-up included)",
                flush=True,
            )
    finally:
        manager.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
