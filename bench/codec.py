"""Codec benchmark: single-object decode/encode records/s on one core.

Compares, in the same run, livefeat's codec (schemas parsed once, writer plan cached per
fingerprint) with what a hurried user writes: per record, parse the .avsc and call
fastavro.schemaless_reader. Run:  .venv/bin/python bench/codec.py [--records N]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any

from fastavro import parse_schema, schemaless_reader

from pipelines import topics
from pipelines.machine import machine
from schemas.codec import SingleObjectCodec
from schemas.store import SchemaStore


def records(subject: str, n: int) -> list[dict[str, Any]]:
    base: dict[str, Any] = {
        "event_time": 1_700_000_000_000,
        "stream_id": "stream-000123",
        "seller_id": "seller-0042",
        "user_id": "user-0009871",
        "currency": "USD",
    }
    out = []
    for i in range(n):
        r = {**base, "event_id": f"evt-{i:012d}", "amount_cents": 1000 + i % 5000}
        if subject == topics.BID_PLACED:
            r["auction_id"] = f"auction-{i % 977}"
        else:
            r.update(
                order_id=f"order-{i:010d}", payment_method_id=f"pm-{i % 31}", shipping_country="US"
            )
        out.append(r)
    return out


def rate(fn: Callable[[Any], Any], items: list[Any]) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    store = SchemaStore.load()
    codec = SingleObjectCodec(store)
    print(f"machine: {machine()}")
    print(f"records per measurement: {args.records:,}")
    print(
        f"{'record':<12} {'livefeat decode':>16} {'naive decode':>14} {'speed-up':>9} "
        f"{'livefeat encode':>16}"
    )
    for subject in (topics.BID_PLACED, topics.ORDER_PLACED):
        recs = records(subject, args.records)
        enc = codec.encoder(subject)
        data = [enc(r) for r in recs]
        dec = codec.decoder(subject)
        avsc = store.latest(subject).path.read_text()

        def naive(b: bytes, avsc: str = avsc) -> Any:
            return schemaless_reader(BytesIO(b[10:]), parse_schema(json.loads(avsc)), None)

        assert dec.decode(data[0]) == recs[0]
        fast = rate(dec.decode, data)
        slow = rate(naive, data[: max(1, args.records // 10)])
        encode = rate(enc, recs)
        name = store.latest(subject).name.rsplit(".", 1)[-1]
        print(
            f"{name:<12} {fast:>14,.0f}/s {slow:>12,.0f}/s {fast / slow:>8.1f}x {encode:>14,.0f}/s"
        )


if __name__ == "__main__":
    main()
