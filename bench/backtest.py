"""Benchmark: point-in-time backtest of 1M labelled events against a 10M-row changelog.

Generates a synthetic ``user_features`` changelog (the reference view's schema, hive
partitioned by date and hour like the pipeline's Parquet sink, with replayed
duplicates and rows written late) and a labels file, then runs ``livefeat
backtest``'s code path (read labels, point-in-time retrieval, rules, figures,
output files) in a fresh process, measuring wall time and peak RSS
(``resource.getrusage``). In the same run, on a smaller size, it times Feast's
``get_historical_features`` (file offline store) on the same rows and compares
the values, as of and as known at (``filter_by_created_timestamp``).

    python bench/backtest.py                       # 1M labels x 10M rows, Feast 100k x 1M
    python bench/backtest.py --labels 100000 --rows 1000000 --feast-labels 5000
    python bench/backtest.py --json                # one JSON document on stdout

Goals (issue #7): under 30 s and 4 GB for 1M x 10M.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines.backtest import Rule, compile_rules  # noqa: E402
from pipelines.jobs.marketplace import PIPELINE  # noqa: E402
from pipelines.sinks.tables import changelog_schema  # noqa: E402

DAY = 86_400_000
START = 1_714_521_600_000  # 2024-05-01T00:00:00Z
VIEW = PIPELINE.view("user_features")
TIERS = ["LOW", "MEDIUM", "HIGH"]

# The reference rules over user features, plus one reading every user feature.
RULES = [
    Rule(
        "new_account_payment_method_churn",
        "user_account_age_days < 1 and user_distinct_payment_methods_24h >= 2",
    ),
    Rule("new_account_bid_burst", "user_bid_count_5m > 20 and user_account_age_days < 1"),
    Rule("high_risk_tier", "user_risk_tier == 'HIGH'"),
    Rule(
        "every_feature",
        "user_bid_amount_sum_1h > 40000 and user_order_count_24h >= 3 "
        "and user_order_amount_avg_24h > 5000 and user_distinct_streams_1h >= 2 "
        "and user_is_verified == False",
    ),
]


def _keys(codes: np.ndarray, prefix: str = "u-") -> pa.Array:
    uniq, inverse = np.unique(codes, return_inverse=True)
    names = pa.array([f"{prefix}{i:08d}" for i in uniq], pa.string())
    return pc.cast(
        pa.DictionaryArray.from_arrays(pa.array(inverse, pa.int32()), names), pa.string()
    )


def synthetic_changelog(rows: int, entities: int, days: int, seed: int) -> pa.Table:
    """``rows`` changelog rows of user_features over ``entities`` users and ``days`` days.

    About 1 % are replays (same key, time and values, written later) and about 1 % were
    written 1-30 minutes late; the rest 0-5 s after they became true.
    """
    rng = np.random.default_rng(seed)
    base = int(rows / 1.01)
    code = rng.integers(0, entities, base)
    event = START + rng.integers(0, days * DAY, base)
    # One row per (user, event time): a changelog has no two different rows for one point.
    _, first = np.unique(code * (days * DAY) + (event - START), return_index=True)
    code, event = code[first], event[first]
    n = len(code)
    latency = rng.integers(0, 5_000, n)
    late = rng.random(n) < 0.01
    latency[late] = rng.integers(60_000, 30 * 60_000, int(late.sum()))
    created = event + latency
    bids = rng.poisson(3, n)
    orders = rng.poisson(1.2, n)
    has_profile = rng.random(n) > 0.05
    account = event - rng.integers(60_000, 400 * DAY, n)
    columns: dict[str, Any] = {
        "user_id": code,
        "event_timestamp": event,
        "created_timestamp": created,
        "user_bid_count_5m": np.minimum(bids * rng.integers(1, 9, n), 60),
        "user_bid_amount_sum_1h": bids * rng.integers(100, 20_000, n),
        "user_order_count_24h": orders,
        "user_order_amount_avg_24h": np.where(
            orders > 0, rng.integers(500, 90_000, n) / 1.0, np.nan
        ),
        "user_distinct_streams_1h": rng.integers(0, 5, n),
        "user_distinct_payment_methods_24h": np.minimum(orders, rng.integers(1, 4, n)),
        "user_account_created_at": account,
        "user_is_verified": rng.random(n) < 0.6,
        "user_risk_tier": rng.integers(0, 3, n),
    }
    replay = rng.choice(n, size=rows - n, replace=False) if rows > n else np.array([], int)
    for name, values in columns.items():
        extra = values[replay]
        if name == "created_timestamp":
            extra = extra + rng.integers(1, DAY, len(replay))
        columns[name] = np.concatenate([values, extra])
    has_profile = np.concatenate([has_profile, has_profile[replay]])
    order = np.argsort(columns["event_timestamp"], kind="stable")
    c = {k: v[order] for k, v in columns.items()}
    prof = ~has_profile[order]
    ts = pa.timestamp("ms", tz="UTC")
    arrays = {
        "user_id": _keys(c["user_id"]),
        "event_timestamp": pa.array(c["event_timestamp"], pa.int64()).cast(ts),
        "created_timestamp": pa.array(c["created_timestamp"], pa.int64()).cast(ts),
        "user_bid_count_5m": pa.array(c["user_bid_count_5m"], pa.int64()),
        "user_bid_amount_sum_1h": pa.array(c["user_bid_amount_sum_1h"], pa.int64()),
        "user_order_count_24h": pa.array(c["user_order_count_24h"], pa.int64()),
        "user_order_amount_avg_24h": pa.array(
            c["user_order_amount_avg_24h"], pa.float64(), from_pandas=True
        ),
        "user_distinct_streams_1h": pa.array(c["user_distinct_streams_1h"], pa.int64()),
        "user_distinct_payment_methods_24h": pa.array(
            c["user_distinct_payment_methods_24h"], pa.int64()
        ),
        "user_account_created_at": pa.array(
            c["user_account_created_at"], pa.int64(), mask=prof
        ).cast(ts),
        "user_is_verified": pa.array(c["user_is_verified"], pa.bool_(), mask=prof),
        "user_risk_tier": pa.array(
            np.array(TIERS, dtype=object)[c["user_risk_tier"]], pa.string(), mask=prof
        ),
    }
    return pa.table(arrays, schema=changelog_schema(VIEW))


def write_store(table: pa.Table, root: Path) -> None:
    """The changelog under ``root/features/user_features/date=.../hour=...`` (the sink's layout)."""
    ts = table.column("event_timestamp")
    parted = table.append_column("date", pc.strftime(ts, "%Y-%m-%d")).append_column(
        "hour", pc.strftime(ts, "%H")
    )
    ds.write_dataset(
        parted,
        root / "features" / VIEW.name,
        format="parquet",
        partitioning=ds.partitioning(
            pa.schema([("date", pa.string()), ("hour", pa.string())]), flavor="hive"
        ),
        basename_template="part-bench-{i}.parquet",
        existing_data_behavior="overwrite_or_ignore",
        max_partitions=100_000,
        file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
    )


def synthetic_labels(
    n: int, entities: int, days: int, seed: int, unique: bool, changelog: pa.Table | None = None
) -> pa.Table:
    """``n`` labelled events: 98 % on known users, 2 % on strangers; 5 % fraud.

    With ``changelog``, 30 % of the events fall 0-10 s after one of its rows (as an order
    falls on the change it causes), where rows written late make as-known-at differ.
    """
    rng = np.random.default_rng(seed + 1)
    code = rng.integers(0, entities, n)
    t = START + rng.integers(0, days * DAY, n)
    if changelog is not None:
        near = np.flatnonzero(rng.random(n) < 0.3)
        picked = rng.integers(0, changelog.num_rows, len(near))
        keys = pc.take(changelog.column("user_id"), pa.array(picked))
        code[near] = pc.cast(pc.utf8_slice_codeunits(keys, 2), pa.int64()).to_numpy()
        times = pc.take(changelog.column("event_timestamp"), pa.array(picked))
        t[near] = pc.cast(times, pa.int64()).to_numpy() + rng.integers(0, 10_000, len(near))
    stranger = rng.random(n) < 0.02
    code[stranger] = entities + rng.integers(0, entities, int(stranger.sum()))
    if unique:  # Feast collapses entity rows with the same key and time
        _, first = np.unique(code * (2 * days * DAY) + (t - START), return_index=True)
        code, t = code[np.sort(first)], t[np.sort(first)]
    return pa.table(
        {
            "label_id": pa.array(np.arange(len(code)), pa.int64()),
            "user_id": _keys(code),
            "event_time": pa.array(t, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "label": pa.array(rng.random(len(code)) < 0.05),
        }
    )


def child(args: argparse.Namespace) -> None:
    """The measured run, in a fresh process: everything ``livefeat backtest`` does."""
    from pipelines.backtest.labelset import read_labels
    from pipelines.backtest.report import write_outputs
    from pipelines.backtest.run import run_backtest

    started = time.perf_counter()
    ruleset = compile_rules(RULES, PIPELINE, "bench rules")
    labels = read_labels(args.labels_file, ["user_id", "seller_id", "stream_id"])
    t_labels = time.perf_counter()
    result = run_backtest(
        ruleset, labels, args.store, as_known_at=args.as_known_at, progress=lambda m: None
    )
    t_run = time.perf_counter()
    write_outputs(result, args.out)
    done = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_kb = usage.ru_maxrss
    print(
        json.dumps(
            {
                "seconds": round(done - started, 2),
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
                "phases": {
                    "labels": round(t_labels - started, 2),
                    "retrieval_rules_metrics": round(t_run - t_labels, 2),
                    "outputs": round(done - t_run, 2),
                    **{k: v for k, v in result.stats["seconds"].items()},
                },
                "peak_rss_mb": round(peak_kb / 1024),
                "rows_read": result.stats["rows_read"],
                "alerts": {m.rule: m.alerts for m in result.metrics},
            }
        )
    )


def measured(
    args: argparse.Namespace, store: Path, labels_file: Path, out: Path, as_known_at: bool
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--store",
        str(store),
        "--labels-file",
        str(labels_file),
        "--out",
        str(out),
    ] + (["--as-known-at"] if as_known_at else [])
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the measured run failed:\n{proc.stderr}")
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    report["process_seconds"] = round(time.perf_counter() - started, 2)
    return report


def feast_compare(work: Path, rows: int, n_labels: int, days: int, seed: int) -> dict[str, Any]:
    """Feast's get_historical_features vs the backtest retrieval on the same small data."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.types import Bool, Float64, Int64, String, UnixTimestamp

    from pipelines.backtest.labelset import normalize_labels
    from pipelines.backtest.run import run_backtest

    entities = max(1, rows // 10)
    table = synthetic_changelog(rows, entities, days, seed + 7)
    # Both read the same single Parquet file (livefeat's store may be any file layout
    # under features/<view>/), so the timing compares the joins, not file counts.
    store_root = work / "feast-offline"
    source = store_root / "features" / VIEW.name / "part-0.parquet"
    source.parent.mkdir(parents=True)
    pq.write_table(table, source)
    repo = work / "feast-repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(
        f"project: livefeat_bench\nregistry: {repo / 'registry.db'}\nprovider: local\n"
        f"offline_store:\n  type: file\nonline_store:\n  type: sqlite\n"
        f"  path: {repo / 'online.db'}\nentity_key_serialization_version: 3\n"
    )
    types = {
        "int64": Int64,
        "float64": Float64,
        "bool": Bool,
        "string": String,
        "timestamp": UnixTimestamp,
    }
    user = Entity(name="user", join_keys=["user_id"])
    view = FeatureView(
        name=VIEW.name,
        entities=[user],
        ttl=timedelta(0),
        schema=[Field(name=f.name, dtype=types[f.value_type]) for f in VIEW.features],
        source=FileSource(
            path=str(source),
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
        ),
    )
    fs = FeatureStore(repo_path=str(repo))
    fs.apply([user, view])
    labels_table = synthetic_labels(n_labels, entities, days, seed + 7, True, table)
    entity_df = labels_table.select(["label_id", "user_id", "event_time"]).to_pandas()
    entity_df = entity_df.rename(columns={"event_time": "event_timestamp"})
    names = [f.name for f in VIEW.features]
    ruleset = compile_rules(
        [Rule("all", " or ".join(f"{n} is not None" for n in names))], PIPELINE, "bench"
    )
    labels = normalize_labels(labels_table, ["user_id"], "bench labels")
    out: dict[str, Any] = {"labels": labels_table.num_rows, "rows": table.num_rows}
    seen: dict[str, pa.Table] = {}
    for mode, known in (("as_of", False), ("as_known_at", True)):
        started = time.perf_counter()
        feast_df = fs.get_historical_features(
            entity_df=entity_df,
            features=[f"{VIEW.name}:{n}" for n in names],
            filter_by_created_timestamp=known,
        ).to_df()
        feast_s = time.perf_counter() - started
        started = time.perf_counter()
        ours = run_backtest(
            ruleset, labels, str(store_root), as_known_at=known, progress=lambda m: None
        )
        ours_s = time.perf_counter() - started
        seen[mode] = ours.rows
        out[mode] = {
            "feast_seconds": round(feast_s, 2),
            "livefeat_seconds": round(ours_s, 2),
            "speed_ratio": round(feast_s / ours_s, 1),
            **_agreement(feast_df, ours.rows, names),
        }
    differ = pc.invert(
        pc.equal(
            seen["as_of"].column("user_features__event_timestamp"),
            seen["as_known_at"].column("user_features__event_timestamp"),
        )
    )
    out["as_known_at_rows_differing_from_as_of"] = int(pc.sum(pc.fill_null(differ, True)).as_py())
    return out


def _comparable(series: pd.Series) -> list[Any]:
    """Values as plain objects, timestamps as epoch ms, nulls as None."""
    present = series.notna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(series):
        stamps = pd.to_datetime(series, utc=True)
        series = stamps.dt.as_unit("ms").astype("int64")
    return [v if ok else None for v, ok in zip(series.astype(object), present, strict=True)]


def _agreement(feast_df: Any, rows: pa.Table, names: list[str]) -> dict[str, Any]:
    """Compare per labelled event; Feast's missing rows and NaN-for-0 are counted apart."""
    ours = rows.to_pandas()
    history = ours["user_features__event_timestamp"].notna()
    dropped = ~ours["label_id"].isin(feast_df["label_id"])
    both = ours.merge(feast_df, on="label_id", suffixes=("", "_feast"))
    with_history = both[both["user_features__event_timestamp"].notna()]
    same = np.ones(len(with_history), dtype=bool)
    for name in names:
        a = _comparable(with_history[name])
        b = _comparable(with_history[f"{name}_feast"])
        same &= np.array([x == y for x, y in zip(a, b, strict=True)], dtype=bool)
    empty = both[both["user_features__event_timestamp"].isna()]
    return {
        "labels_with_history": int(history.sum()),
        "agree": int(same.sum()),
        "mismatches": int((~same).sum()),
        "feast_dropped_rows": int(dropped.sum()),
        "dropped_rows_had_history_in_livefeat": int((dropped & history).sum()),
        "empty_history_rows_feast_kept": len(empty),
        "empty_history_feast_nan_where_livefeat_0": int(
            empty["user_bid_count_5m_feast"].isna().sum()
        ),
    }


def generate(args: argparse.Namespace, data: Path) -> None:
    """Write the synthetic changelog and labels under ``data``."""
    changelog = synthetic_changelog(args.rows, args.entities, args.days, args.seed)
    write_store(changelog, data / "offline")
    labels = synthetic_labels(args.labels, args.entities, args.days, args.seed, False, changelog)
    del changelog
    pq.write_table(labels, data / "labels.parquet")
    (data / "done").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", type=int, default=1_000_000, help="labelled events")
    parser.add_argument("--rows", type=int, default=10_000_000, help="changelog rows")
    parser.add_argument("--entities", type=int, default=1_000_000, help="distinct users")
    parser.add_argument("--days", type=int, default=30, help="period covered")
    parser.add_argument("--feast-labels", type=int, default=100_000)
    parser.add_argument("--feast-rows", type=int, default=1_000_000)
    parser.add_argument("--no-feast", action="store_true", help="skip the Feast comparison")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", help="keep generated data here and reuse it (default: temp)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    # internal: the measured child process
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--labels-file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--as-known-at", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.generate:
        generate(args, Path(args.generate))
        return
    say = (lambda m: print(m, file=sys.stderr)) if args.json else print
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work
        if args.workdir:  # kept, and reused by a later run with the same sizes and seed
            name = f"v2-r{args.rows}-l{args.labels}-e{args.entities}-d{args.days}-s{args.seed}"
            data = Path(args.workdir) / name
        if not (data / "done").exists():
            # In its own process: on Linux a child's ru_maxrss starts from its parent's, so
            # the measured runs must be started from a process that stayed small.
            started = time.perf_counter()
            cmd = [sys.executable, __file__, "--generate", str(data), *sys.argv[1:]]
            subprocess.run(cmd, check=True)
            say(
                f"generated {args.rows:,} changelog rows and {args.labels:,} labels "
                f"in {time.perf_counter() - started:.1f} s"
            )
        report: dict[str, Any] = {
            "size": {
                "labels": args.labels,
                "rows": args.rows,
                "entities": args.entities,
                "days": args.days,
            },
            "machine": {"cpus": os.cpu_count()},
        }
        for mode, known in (("as_of", False), ("as_known_at", True)):
            report[mode] = measured(
                args, data / "offline", data / "labels.parquet", work / f"out-{mode}", known
            )
            r = report[mode]
            say(
                f"{mode}: {r['seconds']} s in the backtest ({r['process_seconds']} s with "
                f"interpreter start; CPU {r['cpu_seconds']} s), peak RSS {r['peak_rss_mb']} MB; "
                f"phases {r['phases']}"
            )
        if not args.no_feast:
            report["feast"] = feast_compare(
                work, args.feast_rows, args.feast_labels, args.days, args.seed
            )
            for mode in ("as_of", "as_known_at"):
                f = report["feast"][mode]
                say(
                    f"feast {mode} ({args.feast_labels:,} x {args.feast_rows:,}): Feast "
                    f"{f['feast_seconds']} s, livefeat {f['livefeat_seconds']} s "
                    f"({f['speed_ratio']}x); {f['agree']} agree, {f['mismatches']} differ; "
                    f"Feast dropped {f['feast_dropped_rows']} labelled events"
                )
            say(
                "as known at differs from as of on "
                f"{report['feast']['as_known_at_rows_differing_from_as_of']} labelled events"
            )
        if args.json:
            print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
