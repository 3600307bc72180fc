"""From options to the publish sequence: the model, bad-record slots, delays, encoding.

No Kafka here: :func:`generate_events` yields :class:`GeneratedRecord` in the
order a publisher must send them, with the partition already chosen (Kafka's
default partitioner on the key), so benchmarks and tests can use the exact
stream a ``livefeat generate`` run publishes.

>>> from pipelines.generator.options import GeneratorOptions
>>> recs = list(generate_events(GeneratorOptions(seed=3, events=50)))
>>> len(recs), recs[0].kind
(50, 'valid')
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from kafka.partitioner.default import murmur2

from pipelines.generator.drift import check_fields, numeric_fields
from pipelines.generator.entities import DAY, Event, MarketParams
from pipelines.generator.faults import BadRecords, DelayLine, Item, key_of
from pipelines.generator.model import Marketplace
from pipelines.generator.options import (
    DECODABLE_KINDS,
    INVALID,
    UNDECODABLE,
    UNKNOWN_FINGERPRINT,
    VALID,
    GeneratedRecord,
    GeneratorOptions,
)
from pipelines.topics import EVENT_TOPICS, ORDER_PLACED, REFERENCE_TOPICS, USER_PROFILE
from schemas.codec import SingleObjectCodec
from schemas.store import SchemaStore


@lru_cache(maxsize=131_072)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as in the Java client) gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Generation:
    """One generator run: iterate :meth:`records`, then read the ground truth.

    Args:
        options: what to generate.
        codec: encoder/decoder over the kept schemas (default: the shipped ones).
    """

    def __init__(self, options: GeneratorOptions, codec: SingleObjectCodec | None = None) -> None:
        self.options = options
        self.codec = codec or SingleObjectCodec(SchemaStore.load())
        self.market = Marketplace(options.seed, options.start, options.shows,
                                  options.fraud_rings_per_hour,
                                  MarketParams(steady=True) if options.steady else None)
        self._encoders = {s: self.codec.encoder(s) for s in REFERENCE_TOPICS}
        self._counts = {s: options.partition_count(s) for s in REFERENCE_TOPICS}
        self._chargeback_rng = random.Random(f"livefeat-chargebacks:{options.seed}")
        self.fraud_user_ids: set[str] = set()
        """Fraud accounts whose profile was published in this run."""
        self.chargebacks: list[dict[str, Any]] = []
        """Labels for backtests: orders charged back later (fraud rings, plus noise)."""
        self.max_event_ms: int | None = None
        """Largest Kafka timestamp published so far (the event-time progress)."""
        self.drifted: list[int] = [0] * len(options.drifts)
        """Per drift of the options, the valid records it changed (bad copies not counted)."""
        check_fields(options.drifts, {
            s: numeric_fields(self.codec.store.latest(s).schema) for s in REFERENCE_TOPICS})
        self._used = False

    def _drift(self, ev: Event) -> Event:
        """``ev`` with every drift that covers its subject and event time applied."""
        record = ev.record
        for drift in self.options.drifts:
            if drift.applies(ev.subject, ev.time_ms) and drift.field in record:
                record = drift.apply(record)
        return ev if record is ev.record else ev._replace(record=record)

    def _count_drift(self, ev: Event) -> None:
        for i, drift in enumerate(self.options.drifts):
            if drift.applies(ev.subject, ev.time_ms) and drift.field in ev.record:
                self.drifted[i] += 1

    def _item(self, ev: Event, kind: str, value: bytes, record: dict[str, Any] | None,
              reason: str | None = None, subject: str | None = None) -> Item:
        subject = subject or ev.subject
        key = ev.key if record is None or kind != INVALID else key_of(subject, record)
        kbytes = key.encode()
        return Item(subject, self.options.topic(subject),
                    partition_for(kbytes, self._counts[subject]), kbytes,
                    ev.time_ms, value, kind, reason, record)

    def _slots(self) -> Iterator[Item]:
        """Model events with bad records slotted in; one slot per published record."""
        opts = self.options
        rng = random.Random(f"livefeat-faults:{opts.seed}")
        bad = BadRecords(self.codec, rng)
        until = None if opts.duration_s is None else opts.start + int(opts.duration_s * 1000)
        events = self.market.events(until)
        if opts.drifts:
            events = map(self._drift, events)
        limit = opts.events
        cut1 = opts.bad_undecodable
        cut2 = cut1 + opts.bad_unknown_fingerprint
        cut3 = cut2 + opts.bad_invalid
        ev = next(events, None)
        produced = 0
        while ev is not None and (limit is None or produced < limit):
            produced += 1
            u = rng.random() if cut3 > 0 else 1.0
            if u >= cut3:
                yield self._item(ev, VALID, self._encoders[ev.subject](ev.record), ev.record)
                bad.remember(ev.subject, ev.record)
                if opts.drifts:
                    self._count_drift(ev)
                ev = next(events, None)
            elif u < cut1:
                value, reason = bad.undecodable(ev.subject, ev.record)
                yield self._item(ev, UNDECODABLE, value, None, reason)
            elif u < cut2:
                value, reason = bad.unknown_fingerprint(ev.subject, ev.record)
                yield self._item(ev, UNKNOWN_FINGERPRINT, value, None, reason)
            else:
                subject, value, reason, record = bad.invalid(ev.subject, ev.record, ev.time_ms)
                yield self._item(ev, INVALID, value, record, reason, subject)

    def records(self) -> Iterator[GeneratedRecord]:
        """The publish sequence. A :class:`Generation` can be iterated once."""
        if self._used:
            raise RuntimeError("a Generation can be iterated once; make a new one")
        self._used = True
        opts = self.options
        line = DelayLine(
            partitions={opts.topic(s): c for s, c in self._counts.items()},
            delayable={opts.topic(s) for s in EVENT_TOPICS},
            out_of_order=opts.out_of_order, late=opts.late, bound_ms=opts.bound_ms,
            late_min_ms=opts.late_min_ms, late_max_ms=opts.late_max_ms,
            rng=random.Random(f"livefeat-delays:{opts.seed}"),
        )
        for seq, item in enumerate(line.run(self._slots())):
            if self.max_event_ms is None or item.ts > self.max_event_ms:
                self.max_event_ms = item.ts
            if item.kind in DECODABLE_KINDS and item.kind != INVALID and item.record is not None:
                self._truth(item.subject, item.record)
            yield GeneratedRecord(seq, item.topic, item.subject, item.partition, item.key,
                                  item.ts, item.value, item.kind, item.reason, item.record,
                                  item.lag_ms, item.partition_lag_ms)

    def _truth(self, subject: str, record: dict[str, Any]) -> None:
        if subject == USER_PROFILE:
            if self.market.is_fraud(record["user_id"]):
                self.fraud_user_ids.add(record["user_id"])
            return
        if subject != ORDER_PLACED:
            return
        fraud = self.market.is_fraud(record["user_id"])
        rng = self._chargeback_rng
        # Labels with noise: most fraud orders come back days later, a few honest ones too.
        if rng.random() < (0.9 if fraud else 0.004):
            delay = rng.randint(2 * DAY, 10 * DAY) if fraud else rng.randint(3 * DAY, 45 * DAY)
            self.chargebacks.append({
                "order_id": record["order_id"], "user_id": record["user_id"],
                "seller_id": record["seller_id"], "stream_id": record["stream_id"],
                "amount_cents": record["amount_cents"], "order_time_ms": record["event_time"],
                "chargeback_time_ms": record["event_time"] + delay, "fraud_account": fraud,
            })


def generate_events(options: GeneratorOptions,
                    codec: SingleObjectCodec | None = None) -> Iterator[GeneratedRecord]:
    """The publish sequence of a run with ``options`` (see :class:`Generation` for ground truth)."""
    return Generation(options, codec).records()
