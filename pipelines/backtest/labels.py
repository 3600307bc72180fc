"""Labels for the reference domain: which orders of a generator run became chargebacks.

The traffic generator (``livefeat generate``) simulates fraud rings and writes a
manifest with the fraud accounts (``fraud_user_ids``) and its own chargeback
labels (``chargebacks``: 90 % of fraud orders charged back 2-10 days later,
0.4 % of honest orders 3-45 days later, so labels are noisy both ways). Two ways
to turn the orders the pipeline accepted into a labels file:

- :func:`chargeback_labels`: the manifest's chargebacks, exactly (the default);
- :func:`simulated_labels`: redraw the noise: a fraud account's order is charged
  back unless a draw falls under ``miss_rate``, an honest order is charged back when
  a draw falls under ``honest_rate``. Draws are a hash of (seed, order id), so the
  result depends on the seed and the orders only, not on their order or number.

Either way, one labelled event per accepted order (``events/livestream.order_placed``
in the offline store), at the order's event time, keyed by the order's
``user_id``, ``seller_id`` and ``stream_id``: a rule sees the features as of the
moment the order was placed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines import topics
from pipelines.errors import ConfigError
from pipelines.features.definitions import DAY_MS
from pipelines.sinks.parquet import read_dataset

TS = pa.timestamp("ms", tz="UTC")
LABELS_SCHEMA = pa.schema(
    [
        ("order_id", pa.string()),
        ("user_id", pa.string()),
        ("seller_id", pa.string()),
        ("stream_id", pa.string()),
        ("event_time", TS),
        ("label", pa.bool_()),
        ("amount_cents", pa.int64()),
        ("chargeback_time", TS),
    ]
)
"""What the reference-domain labels look like (a valid labels file for ``livefeat backtest``)."""

_ORDER_COLUMNS = [
    "order_id",
    "user_id",
    "seller_id",
    "stream_id",
    "event_time",
    "amount_cents",
    "_partition",
    "_offset",
]


def read_orders(
    uri: str,
    *,
    from_ms: int | None = None,
    to_ms: int | None = None,
    s3_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Accepted orders from the offline store's event log, once each, in event-time order.

    Args:
        uri: the offline store.
        from_ms: first event time kept (inclusive).
        to_ms: last event time kept (inclusive).
        s3_options: ``pyarrow.fs.S3FileSystem`` options for ``s3://`` stores.

    Raises:
        ConfigError: the store has no accepted orders.
    """
    dataset = f"events/{topics.ORDER_PLACED}"
    try:
        table = read_dataset(uri, dataset, s3_options, columns=_ORDER_COLUMNS)
    except FileNotFoundError as exc:
        raise ConfigError(
            "no accepted orders in the offline store",
            where=f"offline store {uri}, dataset {dataset}",
            fix="run the pipeline over the generated traffic first (livefeat run --bounded)",
        ) from exc
    times = pc.cast(pc.cast(table.column("event_time"), TS), pa.int64())
    table = table.set_column(table.schema.get_field_index("event_time"), "event_time", times)
    if from_ms is not None:
        table = table.filter(pc.greater_equal(table.column("event_time"), from_ms))
    if to_ms is not None:
        table = table.filter(pc.less_equal(table.column("event_time"), to_ms))
    seen: set[tuple[int, int]] = set()
    orders = []
    for row in table.to_pylist():  # replays may have written a record twice
        position = (row.pop("_partition"), row.pop("_offset"))
        if position not in seen:
            seen.add(position)
            orders.append(row)
    orders.sort(key=lambda r: (r["event_time"], r["order_id"]))
    return orders


def _table(
    orders: Sequence[Mapping[str, Any]], labels: list[bool], chargeback_ms: list[int | None]
) -> pa.Table:
    columns = {
        name: [o.get(name) for o in orders]
        for name in ("order_id", "user_id", "seller_id", "stream_id", "amount_cents")
    }
    return pa.table(
        {
            **{k: columns[k] for k in ("order_id", "user_id", "seller_id", "stream_id")},
            "event_time": pa.array([int(o["event_time"]) for o in orders], pa.int64()).cast(TS),
            "label": labels,
            "amount_cents": columns["amount_cents"],
            "chargeback_time": pa.array(chargeback_ms, pa.int64()).cast(TS),
        },
        schema=LABELS_SCHEMA,
    )


def chargeback_labels(
    orders: Sequence[Mapping[str, Any]], chargebacks: Iterable[Mapping[str, Any]]
) -> pa.Table:
    """One labelled event per order: true when the order was charged back.

    Args:
        orders: order records (``order_id``, ``user_id``, ``seller_id``, ``stream_id``,
            ``event_time`` in epoch ms, ``amount_cents``).
        chargebacks: the manifest's ``chargebacks`` (``order_id``, ``chargeback_time_ms``).
    """
    when = {c["order_id"]: c.get("chargeback_time_ms") for c in chargebacks}
    return _table(
        orders, [o["order_id"] in when for o in orders], [when.get(o["order_id"]) for o in orders]
    )


def _draw(seed: int, order_id: str, what: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{what}:{order_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def simulated_labels(
    orders: Sequence[Mapping[str, Any]],
    fraud_user_ids: Collection[str],
    *,
    seed: int = 0,
    miss_rate: float = 0.1,
    honest_rate: float = 0.004,
) -> pa.Table:
    """Chargebacks drawn from the fraud accounts, with noise both ways.

    Args:
        orders: order records (see :func:`chargeback_labels`).
        fraud_user_ids: the fraud accounts (the manifest's ``fraud_user_ids``).
        seed: seeds the draws.
        miss_rate: share of fraud orders never charged back.
        honest_rate: share of honest orders charged back anyway (friendly fraud).

    Raises:
        ConfigError: a rate is outside [0, 1].
    """
    for name, rate in (("miss_rate", miss_rate), ("honest_rate", honest_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {rate}", where=f"labels {name}")
    fraud = set(fraud_user_ids)
    labels: list[bool] = []
    when: list[int | None] = []
    for o in orders:
        is_fraud = o["user_id"] in fraud
        u = _draw(seed, o["order_id"], "label")
        charged = u >= miss_rate if is_fraud else u < honest_rate
        labels.append(charged)
        low, high = (2, 10) if is_fraud else (3, 45)
        delay = int((low + (high - low) * _draw(seed, o["order_id"], "delay")) * DAY_MS)
        when.append(int(o["event_time"]) + delay if charged else None)
    return _table(orders, labels, when)


def labels_from_manifest(
    uri: str,
    manifest: Mapping[str, Any],
    *,
    noise: tuple[float, float] | None = None,
    seed: int | None = None,
    s3_options: dict[str, Any] | None = None,
) -> pa.Table:
    """Labels for the accepted orders of one generator run.

    Args:
        uri: the offline store the pipeline wrote.
        manifest: the run's manifest (``pipelines.generator.manifest.read_manifest``).
        noise: ``(miss_rate, honest_rate)`` to redraw labels with
            :func:`simulated_labels`; None keeps the manifest's chargebacks.
        seed: seed of the redraw (default: the run's seed).
        s3_options: ``pyarrow.fs.S3FileSystem`` options for ``s3://`` stores.
    """
    orders = read_orders(
        uri,
        from_ms=manifest.get("start_time_ms"),
        to_ms=manifest.get("end_time_ms"),
        s3_options=s3_options,
    )
    if noise is None:
        return chargeback_labels(orders, manifest.get("chargebacks", []))
    run_seed = seed if seed is not None else int(manifest.get("seed", 0))
    return simulated_labels(
        orders,
        manifest.get("fraud_user_ids", []),
        seed=run_seed,
        miss_rate=noise[0],
        honest_rate=noise[1],
    )


def write_labels(table: pa.Table, path: str | Path) -> Path:
    """Write labels as Parquet (``.parquet``) or CSV (anything else), atomically."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix.lower() == ".parquet":
        pq.write_table(table, tmp)
    else:
        pacsv.write_csv(table, tmp)
    tmp.replace(out)
    return out
