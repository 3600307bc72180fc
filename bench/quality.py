"""Quality gate benchmark: what Great Expectations validation costs next to the pipeline.

Measures, on one core, with the suites and profiles shipped in ``quality/``:

1. the validation time of one 100k-row batch: the row suite of
   ``livestream.order_placed`` (1 % bad rows) and the drift suite of ``user_features``;
2. the per-call cost of a 1k-row batch (GX's fixed cost dominates it);
3. the gate's share of pipeline time over generated reference traffic: the pipeline
   is decode + row rules (quality/rows.py) + the feature engine (batch runtime) over
   every event, the gate is ``check_rows`` on every event in micro-batches of the given
   sizes plus ``check_features`` on every changelog row in micro-batches of the given
   event-time spans (at most 50k rows). Flink's own overhead is not in the pipeline
   figure, so the share is an upper bound;
4. the share projected for high-volume traffic, where batches are full and GX's fixed
   cost per call vanishes: the per-row cost of the 100k-row batches over the
   pipeline's cost per event;
5. what the gate costs a streaming job (``--parts stream``): a private stack, generated
   traffic, then the bounded reference job on the embedded Flink runtime over the same
   topics, in one process, in rounds of three runs (order rotating): ``plain`` without
   the gate (``quality.enabled: false``); ``hop`` with the gate on but no feature
   suite, so every row passes it unchecked (what hosting the gate costs by itself: the
   gate runs inside the offline sink, which then hands the changelog on to the online
   sink); ``gate`` with the gate as configured. A first run pays
   for starting the JVM and importing PyFlink and Feast, and is left out. Reported:
   median wall and CPU time per kind (start-up included; CPU of this process and its
   children: the JVM with its embedded Python, the gate's validation process, the
   stack), the differences ``hop - plain`` and ``gate - hop`` (Great Expectations:
   import and validations), and from the ``gate_step`` results the gate recorded: where
   it validated, how long it took to be ready, the validations' time, and how long the
   sink's task thread waited for a verdict.

Run:  .venv/bin/python bench/quality.py [--minutes 30] [--row-batches 1000,10000,50000]
          [--feature-spans-ms 60000,600000] [--parts batch,stream] [--stream-events 20000]
          [--stream-rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

# This file is called quality.py: run as a script, its directory comes first on sys.path
# and would shadow the `quality` package.
if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from pipelines import topics
from pipelines.generator.model import Marketplace
from pipelines.jobs.marketplace import PIPELINE
from pipelines.machine import machine
from pipelines.runtime.batch import run_pipeline
from quality.batcher import MicroBatcher
from quality.config import GateConfig
from quality.gate import QualityGate
from quality.rows import RowRules
from schemas.codec import SingleObjectCodec
from schemas.store import SchemaStore

START = 1_714_521_600_000
SELLER_POLICY = {"seller_features": {"batch_max_ms": 600_000, "min_rows": 500}}




def cpu_seconds() -> float | None:
    """CPU time (user + system) of this process and its descendants, from ``/proc``.

    The descendants are the local Flink runtime's JVM (with the Python it embeds in
    thread mode) and the embedded stack's broker and S3 emulator. None without ``/proc``.
    """
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone since the listing
        fields = text[text.rindex(")") + 2:].split()  # from the state field on
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime
    mine = {os.getpid()}
    grew = True
    while grew:
        found = {pid for pid, ppid in parent.items() if ppid in mine} - mine
        grew = bool(found)
        mine |= found
    return sum(ticks.get(pid, 0) for pid in mine) / os.sysconf("SC_CLK_TCK")


def timed(fn: Callable[[], Any], repeat: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def traffic(minutes: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """Reference events in event-time order, as (topic, record)."""
    market = Marketplace(seed=seed, start_ms=START)
    out = []
    for i, e in enumerate(market.events(until_ms=START + minutes * 60_000)):
        record = dict(e.record)
        out.append((e.subject, record))
        record["_partition"], record["_offset"] = 0, i
    return out


def orders(n: int, bad_share: float = 0.01) -> list[dict[str, Any]]:
    """``n`` order records, ``bad_share`` of them breaking one rule each."""
    rows = []
    step = max(1, round(1 / bad_share)) if bad_share else n + 1
    for i in range(n):
        row: dict[str, Any] = {
            "event_id": f"evt-{i:012d}", "event_time": START + i, "stream_id": f"st-{i % 97}",
            "seller_id": f"se-{i % 41}", "order_id": f"ord-{i:09d}", "user_id": f"u-{i % 9973}",
            "amount_cents": 500 + (i * 37) % 20_000, "currency": "USD",
            "payment_method_id": f"pm-{i % 613}", "shipping_country": "US",
        }
        if i % step == step - 1:
            kind = (i // step) % 4
            if kind == 0:
                row["user_id"] = ""
            elif kind == 1:
                row["amount_cents"] = -row["amount_cents"]
            elif kind == 2:
                row["currency"] = "EUR"
            else:
                row["event_time"] = START + 10 * 3_600_000
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, default=30, help="Traffic length (event time).")
    parser.add_argument("--row-batches", default="1000,10000,50000",
                        help="Row micro-batch sizes to compare, comma-separated.")
    parser.add_argument("--feature-spans-ms", default="60000,600000",
                        help="Feature micro-batch event-time spans to compare, comma-separated.")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--parts", default="batch,stream",
                        help="batch (items 1-4), stream (item 5), or both, comma-separated.")
    parser.add_argument("--stream-events", type=int, default=20_000,
                        help="Events published for the streaming comparison.")
    parser.add_argument("--stream-rounds", type=int, default=3,
                        help="Rounds of plain / hop / gate runs (after a warm-up run).")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    parts = set(args.parts.split(","))
    if "batch" in parts:
        batch_figures(args)
    if "stream" in parts:
        stream_share(args.stream_events, args.seed, args.stream_rounds)


def batch_figures(args: argparse.Namespace) -> None:
    """Items 1-4 of the module docs: one batch, and the share without Flink."""
    sizes = [int(s) for s in args.row_batches.split(",")]
    spans = [int(s) for s in args.feature_spans_ms.split(",")]

    results = Path(tempfile.mkdtemp(prefix="livefeat-bench-quality-"))
    t0 = time.perf_counter()
    config = GateConfig.from_mapping({"results_dir": str(results), "views": SELLER_POLICY})
    gate = QualityGate.load(config=config)
    print(f"gate load (suites, profiles, GX context): {time.perf_counter() - t0:.2f} s")

    # -- 1 and 2: one batch ------------------------------------------------------------
    big = orders(100_000)
    small = big[:1000]
    t_rows_100k = timed(lambda: gate.check_rows(topics.ORDER_PLACED, big, START), args.repeat)
    t_rows_1k = timed(lambda: gate.check_rows(topics.ORDER_PLACED, small, START), args.repeat * 3)

    events = traffic(args.minutes, args.seed)
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for subject, record in events:
        by_topic[subject].append(record)
    changelogs = run_pipeline(PIPELINE, by_topic)
    user_rows = changelogs["user_features"].rows
    feature_100k = (user_rows * (100_000 // max(len(user_rows), 1) + 1))[:100_000]
    t_feat_100k = timed(
        lambda: gate.check_features("user_features", feature_100k, "bench-100k"), args.repeat
    )
    t_feat_1k = timed(
        lambda: gate.check_features("user_features", feature_100k[:1000], "bench-1k"),
        args.repeat * 3,
    )
    print(f"\n{'one batch':<44} {'100k rows':>10} {'1k rows':>9}")
    print(f"{'row suite, livestream.order_placed':<44} {t_rows_100k:>8.3f} s {t_rows_1k:>7.3f} s")
    print(f"{'drift suite, user_features':<44} {t_feat_100k:>8.3f} s {t_feat_1k:>7.3f} s")

    # -- 3: share of pipeline time ----------------------------------------------------------
    codec = SingleObjectCodec(SchemaStore.load())
    encoders = {s: codec.encoder(s) for s in topics.REFERENCE_TOPICS}
    decoders = {s: codec.decoder(s) for s in topics.REFERENCE_TOPICS}
    raw = [(s, encoders[s]({k: v for k, v in r.items() if not k.startswith("_")}))
           for s, r in events]
    rules = RowRules()
    time_field = {s.topic: s.timestamp_field for s in PIPELINE.event_sources}
    time_field.update({c.topic: c.timestamp_field for c in PIPELINE.changelogs})

    def decode_and_rules() -> None:
        for s, data in raw:
            rec = decoders[s].decode(data)
            rules.violation(rec, time_field[s], rec[time_field[s]])

    t_decode = timed(decode_and_rules)
    t_engine = timed(lambda: run_pipeline(PIPELINE, by_topic))
    pipeline = t_decode + t_engine

    ordered = {v: sorted(log.rows, key=lambda r: r["event_timestamp"])
               for v, log in changelogs.items()}

    def feature_gate(span_ms: int) -> None:
        for view, rows in ordered.items():
            batcher = MicroBatcher(view, 50_000, span_ms)
            for row in rows:
                for b in batcher.add(row):
                    gate.check_features(view, b.rows, b.batch_id)
            for b in batcher.flush():
                gate.check_features(view, b.rows, b.batch_id)

    def row_gate(size: int) -> None:
        for subject, records in by_topic.items():
            for i in range(0, len(records), size):
                chunk = records[i : i + size]
                gate.check_rows(subject, chunk, chunk[-1][time_field[subject]])

    n_rows = sum(len(rows) for rows in ordered.values())
    print(f"\ntraffic: {args.minutes} min of event time, {len(events):,} events, "
          f"{n_rows:,} changelog rows")
    print(f"pipeline without Flink: decode + row rules {t_decode:.2f} s, "
          f"feature engine {t_engine:.2f} s, total {pipeline:.2f} s "
          f"({pipeline / len(events) * 1e6:.1f} us/event)")
    t_rows = {size: timed(partial(row_gate, size)) for size in sizes}
    t_feat = {span: timed(partial(feature_gate, span)) for span in spans}
    print("\ngate time (share of pipeline + gate), by row batch size and feature batch span")
    print(f"{'':>16}" + "".join(f"{f'features {s // 1000} s':>26}" for s in spans))
    for size in sizes:
        cells = []
        for span in spans:
            total = t_rows[size] + t_feat[span]
            cells.append(f"{total:>8.2f} s ({total / (pipeline + total):>5.1%})")
        print(f"{f'rows {size:,}':>16}" + "".join(f"{c:>26}" for c in cells))
    per_event = pipeline / len(events)
    projected = (t_rows_100k + t_feat_100k * n_rows / len(events)) / 100_000
    print(f"\nhigh-volume projection (full 100k-row batches): gate {projected * 1e6:.1f} us "
          f"per event vs pipeline {per_event * 1e6:.1f} us per event: "
          f"{projected / (per_event + projected):.1%} of the total")


def stream_share(events: int, seed: int, rounds: int) -> None:
    """Item 5: the bounded reference job without the gate step, with a pass-through one,
    and with the gate, on the same traffic."""
    import shutil

    import yaml
    from click.testing import CliRunner

    from pipelines.cli.main import cli
    from pipelines.config import Settings
    from pipelines.operators.routing import RoutingPlan
    from pipelines.runtime.streaming import run_pipeline as run_stream
    from pipelines.runtime.summary import gate_outcomes, run_key
    from pipelines.sources.offsets import true_end_offsets
    from pipelines.stack import StackManager, override_stack
    from pipelines.stack.process import free_port
    from quality.results import ResultStore

    root = Path(tempfile.mkdtemp(prefix="livefeat-bench-gate-"))
    no_suites = root / "no-suites"  # the gate step with nothing to validate: a pure hop
    (no_suites / "suites").mkdir(parents=True)
    (no_suites / "profiles").mkdir()
    base = override_stack(Settings(), broker_port=free_port(), s3_port=free_port(),
                          state_dir=root / "state")
    manager = StackManager(base)
    try:
        stack = manager.up().apply(base)
        config = root / "livefeat.yaml"
        config.write_text(yaml.safe_dump(stack.model_dump(mode="json", exclude={"source_file"})))
        result = CliRunner().invoke(cli, ["--config", str(config), "generate", "--events",
                                          str(events), "--seed", str(seed), "--quiet"])
        if result.exit_code != 0:
            raise SystemExit(result.output)
        key = run_key(PIPELINE.name, true_end_offsets(stack.kafka, RoutingPlan(PIPELINE).topics))
        kinds = ["plain", "hop", "gate"]
        order = ["warm-up"] + [k for i in range(rounds) for k in kinds[i % 3:] + kinds[:i % 3]]
        wall: dict[str, list[float]] = defaultdict(list)
        cpu: dict[str, list[float]] = defaultdict(list)
        steps: list[dict[str, Any]] = []
        rows = batches = 0
        for n, kind in enumerate(order):
            results = root / f"quality-{n}"
            settings = stack.model_copy(update={
                "flink": stack.flink.model_copy(update={"checkpoint_dir": root / f"ckpt-{n}"}),
                "offline_store": stack.offline_store.model_copy(
                    update={"uri": str(root / f"offline-{n}")}),
                "online_store": stack.online_store.model_copy(
                    update={"sqlite_path": root / f"online-{n}" / "online.db"}),
                "quality": stack.quality.model_copy(update={
                    "enabled": kind in ("hop", "gate"), "results_dir": results,
                    "dir": no_suites if kind == "hop" else None}),
            })
            started, cpu_before = time.perf_counter(), cpu_seconds()
            summary = run_stream(settings, "marketplace", bounded=True)
            wall[kind].append(time.perf_counter() - started)
            cpu_after = cpu_seconds()
            if cpu_before is not None and cpu_after is not None:
                cpu[kind].append(cpu_after - cpu_before)
            assert summary is not None and summary.balanced and summary.gate_balanced
            print(f"flink job, {kind}: {summary.total_read:,} records, "
                  f"{sum(summary.changelog_rows.values()):,} changelog rows, "
                  f"{wall[kind][-1]:.1f} s end to end (start-up included), "
                  f"CPU {cpu[kind][-1] if cpu[kind] else float('nan'):.1f} s", flush=True)
            if kind == "gate":
                outcomes = gate_outcomes(results, key)
                batches = sum(sum(g.batches.values()) for g in outcomes.values())
                rows = sum(g.produced for g in outcomes.values())
                steps += [r for r in ResultStore(results).results("gate_step")
                          if r.get("run") == key]
        del wall["warm-up"], cpu["warm-up"]
        med = {k: statistics.median(v) for k, v in wall.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items() if v}
        print(f"\nthe gate step in the job, medians of {rounds} runs each ({machine()}):")
        for k in kinds:
            print(f"  {k:<6} wall {med[k]:5.1f} s {sorted(round(x, 1) for x in wall[k])}   "
                  f"CPU {med_cpu.get(k, float('nan')):5.1f} s")
        hop, gx = med["hop"] - med["plain"], med["gate"] - med["hop"]
        total = med["gate"] - med["plain"]
        print(f"  hosting the gate (hop - plain): {hop:+.1f} s wall = {hop / med['gate']:.1%} "
              f"of the gated run ({hop / max(rows, 1) * 1e6:.0f} us per changelog row)")
        print(f"  Great Expectations (gate - hop): {gx:+.1f} s wall = {gx / med['gate']:.1%}")
        print(f"  the gate in all (gate - plain): {total:+.1f} s wall = {total / med['gate']:.1%}"
              + (f"; CPU {med_cpu['gate'] - med_cpu['plain']:+.1f} s" if med_cpu else ""))
        per_run = max(len(wall["gate"]), 1)
        validation = sum(r["validation_s"] for r in steps) / per_run
        waited = sum(r["waited_s"] for r in steps) / per_run
        loads = sorted(round(r["load_s"], 1) for r in steps if r.get("load_s") is not None)
        workers = sorted({str(r.get("worker")) for r in steps})
        print(f"  per gated run: {batches} micro-batches, {rows:,} rows; validations "
              f"{validation:.2f} s ({validation / med['gate']:.1%} of the run) on a "
              f"{'/'.join(workers)} worker, ready {loads} s after the step opened; "
              f"the task thread waited {waited:.2f} s for verdicts")
    finally:
        manager.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
