"""Offline store benchmark: Parquet write throughput, changelog reads, point-in-time retrieval.

* write: changelog rows of user_features through the offline sinks in batches of 20,000
  rows (the streaming job's batch size), to a local directory and to a private S3
  emulator (moto, started and stopped by this script);
* read: ``pipelines.offline.read_changelog`` (deduplicated);
* point-in-time: Feast ``get_historical_features`` for E entity rows (default 100,000)
  over that changelog, and livefeat's own ``pipelines.offline.as_of`` for the same rows.
Run:  .venv/bin/python bench/offline.py [--rows N] [--entity-rows E] [--no-s3]
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.config import OfflineStoreSettings, OnlineStoreSettings, S3Settings, Settings
from pipelines.feast_repo import apply
from pipelines.jobs.marketplace import PIPELINE
from pipelines.machine import machine
from pipelines.offline import as_of, read_changelog
from pipelines.sinks.s3 import offline_sink
from pipelines.sinks.tables import changelog_schema
from pipelines.stack import s3 as stack_s3

VIEW = PIPELINE.view("user_features")
T0 = 1_700_000_000_000
HOUR = 3_600_000




def changelog(n: int, entities: int, hours: int, rnd: random.Random) -> list[dict[str, Any]]:
    """``n`` changelog rows over ``entities`` users and ``hours`` hours, in time order."""
    step = hours * HOUR // n
    return [{
        "user_id": f"u{rnd.randrange(entities)}", "event_timestamp": T0 + i * step,
        "created_timestamp": T0 + i * step + 500,
        "user_bid_count_5m": rnd.randint(0, 9), "user_bid_amount_sum_1h": rnd.randint(0, 10**6),
        "user_order_count_24h": rnd.randint(0, 30),
        "user_order_amount_avg_24h": rnd.random() * 10**5 if rnd.random() < 0.8 else None,
        "user_distinct_streams_1h": rnd.randint(0, 5),
        "user_distinct_payment_methods_24h": rnd.randint(0, 3),
        "user_account_created_at": T0 - rnd.randint(0, 10**10),
        "user_is_verified": rnd.random() < 0.5, "user_risk_tier": rnd.choice(["LOW", "HIGH"]),
    } for i in range(n)]


def bench_write(settings: Settings, rows: list[dict[str, Any]], label: str) -> None:
    """Write ``rows`` in batches of 20,000 and print rows/s."""
    sink = offline_sink(settings, writer_id="bench")
    schema = changelog_schema(VIEW)
    start = time.perf_counter()
    for i in range(0, len(rows), 20_000):
        sink.write("features/user_features", schema, rows[i:i + 20_000])
    took = time.perf_counter() - start
    print(f"  write {label:<6} {len(rows) / took:>10,.0f} rows/s "
          f"({len(rows):,} rows, {took:.2f} s)")


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """A private moto server with a bucket, on a free port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(stack_s3.server_argv(sys.executable, port),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = stack_s3.endpoint_url(port)
    while stack_s3.probe(url, "us-east-1") is not None:
        time.sleep(0.1)
    stack_s3.ensure_bucket(stack_s3.emulator_client(url, "us-east-1"), "bench", "us-east-1")
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--entity-rows", type=int, default=100_000)
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()
    print(f"offline store benchmark on {machine()}")
    rnd = random.Random(7)
    rows = changelog(args.rows, args.entities, 48, rnd)
    tmp = Path(tempfile.mkdtemp(prefix="livefeat-bench-"))
    local = Settings(offline_store=OfflineStoreSettings(uri=str(tmp / "offline")),
                     online_store=OnlineStoreSettings(sqlite_path=tmp / "online.db"))
    bench_write(local, rows, "local")
    if not args.no_s3:
        proc, url = start_moto()
        try:
            s3 = Settings(s3=S3Settings(endpoint_url=url, bucket="bench"),
                          offline_store=OfflineStoreSettings(uri="s3://bench/offline"))
            bench_write(s3, rows, "s3")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()

    start = time.perf_counter()
    table = read_changelog(local, "user_features")
    took = time.perf_counter() - start
    print(f"  read_changelog    {table.num_rows / took:>10,.0f} rows/s "
          f"({table.num_rows:,} rows, {took:.2f} s)")

    points = [(f"u{rnd.randrange(args.entities)}", T0 + rnd.randrange(HOUR, 48 * HOUR))
              for _ in range(args.entity_rows)]
    points = list(dict.fromkeys(points))  # Feast merges duplicate (entity, time) rows
    entity_df = pd.DataFrame({
        "user_id": [k for k, _ in points],
        "event_timestamp": pd.to_datetime([t for _, t in points], unit="ms", utc=True),
    })
    store = apply(local, project="bench")
    refs = [f"user_features:{n}" for n in VIEW.feature_names]
    start = time.perf_counter()
    result = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
    took = time.perf_counter() - start
    print(f"  point-in-time, Feast get_historical_features: {len(points):,} entity rows x "
          f"{len(refs)} features over {table.num_rows:,} changelog rows: {took:.2f} s "
          f"({len(result):,} rows returned)")
    start = time.perf_counter()
    ours = as_of(table, VIEW, points)
    took = time.perf_counter() - start
    print(f"  point-in-time, pipelines.offline.as_of: {len(ours):,} entity rows: {took:.2f} s")


if __name__ == "__main__":
    main()
