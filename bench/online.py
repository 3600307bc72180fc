"""Online store benchmark: write throughput of the online sink, read latency through Feast's SDK.

Writes N user_features entities through :class:`pipelines.sinks.online.OnlineSink`
(first as new entities, then as newer updates), then measures
``FeatureStore.get_online_features`` for all features of the view, 1 entity and
100 entities per call, on the embedded SQLite store and on Redis. Each store gets a
temporary directory and a unique Feast project; Redis keys are deleted at the end.
Run:  .venv/bin/python bench/online.py [--store sqlite|redis|both] [--entities N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pipelines.config import OfflineStoreSettings, OnlineStoreSettings, Settings
from pipelines.feast_repo import apply
from pipelines.jobs.marketplace import PIPELINE
from pipelines.machine import machine
from pipelines.sinks.online import OnlineSink
from pipelines.sinks.tables import changelog_schema

VIEW = PIPELINE.view("user_features")
T0 = 1_700_000_000_000




def rows(n: int, t: int, rnd: random.Random) -> list[dict[str, Any]]:
    """Changelog rows of user_features for users u0..u(n-1), all at time ``t``."""
    return [{
        "user_id": f"u{i}", "event_timestamp": t + i % 1000, "created_timestamp": t,
        "user_bid_count_5m": rnd.randint(0, 9), "user_bid_amount_sum_1h": rnd.randint(0, 10**6),
        "user_order_count_24h": rnd.randint(0, 30),
        "user_order_amount_avg_24h": rnd.random() * 10**5,
        "user_distinct_streams_1h": rnd.randint(0, 5),
        "user_distinct_payment_methods_24h": rnd.randint(0, 3),
        "user_account_created_at": T0 - rnd.randint(0, 10**10),
        "user_is_verified": rnd.random() < 0.5, "user_risk_tier": rnd.choice(["LOW", "HIGH"]),
    } for i in range(n)]


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 of ``samples`` (seconds) in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


def bench_store(kind: str, entities: int, reads: int, redis: str) -> None:
    """Write and read benchmarks for one store kind."""
    tmp = Path(tempfile.mkdtemp(prefix="livefeat-bench-"))
    settings = Settings(
        online_store=OnlineStoreSettings(type=kind,  # type: ignore[arg-type]
                                         sqlite_path=tmp / "online.db",
                                         redis_connection_string=redis),
        offline_store=OfflineStoreSettings(uri=str(tmp / "offline")),
    )
    project = f"bench{uuid.uuid4().hex[:8]}"
    rnd = random.Random(1)
    store = apply(settings, project=project)
    try:
        sink = OnlineSink(settings, project=project)
        schema = changelog_schema(VIEW)
        for label, t in (("new entities", T0), ("updates", T0 + 60_000)):
            batch = rows(entities, t, rnd)
            start = time.perf_counter()
            for i in range(0, len(batch), 2000):
                sink.write("features/user_features", schema, batch[i:i + 2000])
            took = time.perf_counter() - start
            print(f"  write {label:<12} {entities / took:>10,.0f} entities/s "
                  f"({entities} entities, batches of 2000)")
        sink.close()
        refs = [f"user_features:{n}" for n in VIEW.feature_names]
        for per_call, calls in ((1, reads), (100, max(50, reads // 10))):
            samples = []
            for c in range(calls + 20):
                keys = [{"user_id": f"u{rnd.randrange(entities)}"} for _ in range(per_call)]
                start = time.perf_counter()
                store.get_online_features(features=refs, entity_rows=keys).to_dict()
                if c >= 20:  # warm-up excluded
                    samples.append(time.perf_counter() - start)
            p50, p99 = percentiles(samples)
            print(f"  read {per_call:>3} entit{'y' if per_call == 1 else 'ies'} x "
                  f"{len(VIEW.feature_names)} features: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                  f"({calls} calls)")
    finally:
        if kind == "redis":
            store.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "redis", "both"], default="both")
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--reads", type=int, default=2_000)
    parser.add_argument("--redis", default="127.0.0.1:6379", help="host:port of Redis")
    args = parser.parse_args()
    print(f"online store benchmark on {machine()}")
    for kind in (["sqlite", "redis"] if args.store == "both" else [args.store]):
        print(f"{kind}:")
        bench_store(kind, args.entities, args.reads, args.redis)


if __name__ == "__main__":
    main()
