"""Fault injection: bad records, and valid records delayed out of order or late.

Two independent pieces, both pure and deterministic:

* :class:`BadRecords` turns a template event into a record that a pipeline
  must quarantine: bytes that are not single-object Avro (``undecodable``), a
  writer fingerprint no kept schema has (``unknown_fingerprint``), or a record
  that decodes but breaks a row rule (``invalid``).
* :class:`DelayLine` reorders the publish sequence: a record picked as
  ``out_of_order`` is held back at most the watermark bound; one picked as
  ``late`` is held until every partition of its topic has moved on by
  ``late_min_ms``..``late_max_ms``. The kind a delayed record finally gets is
  *measured* when it is released, against the largest timestamp published
  before it on any topic (``lag``): ``lag <= 0`` valid, ``0 < lag <= bound``
  out_of_order, ``lag > bound`` late. So every label is true by construction.

``users.profile`` records are never delayed: the topic is compacted by user id,
and a delayed older version published after a newer one would survive
compaction in its place.
"""

from __future__ import annotations

import heapq
import json
import random
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.generator.options import (
    FUTURE_LIMIT_MS,
    INVALID_REASONS,
    LATE,
    OUT_OF_ORDER,
    VALID,
)
from pipelines.topics import USER_PROFILE
from schemas.codec import MAGIC, SingleObjectCodec

_ID_FIELDS = ("event_id", "stream_id", "seller_id", "user_id", "auction_id", "order_id")
_OTHER_CURRENCIES = ("EUR", "GBP", "CAD", "JPY", "MXN", "AUD")


@dataclass(slots=True)
class Item:
    """A record on its way through the delay line (kind is provisional until published)."""

    subject: str
    topic: str
    partition: int
    key: bytes
    ts: int
    value: bytes
    kind: str
    reason: str | None = None
    record: dict[str, Any] | None = None
    lag_ms: int | None = None
    partition_lag_ms: int | None = None


def key_of(subject: str, record: dict[str, Any]) -> str:
    """The Kafka key of a record: ``user_id`` on users.profile, ``stream_id`` elsewhere."""
    return str(record["user_id"] if subject == USER_PROFILE else record["stream_id"])


class BadRecords:
    """Builds bad records from template records (the template itself stays valid).

    Args:
        codec: encodes templates; its store tells which fingerprints exist.
        rng: the fault stream's random source.
    """

    def __init__(self, codec: SingleObjectCodec, rng: random.Random) -> None:
        self.codec = codec
        self.rng = rng
        self._encoders = {s: codec.encoder(s) for s in codec.store.subjects()}
        self._known = {v.fingerprint_bytes for v in codec.store}
        self._latest = {s: codec.store.latest(s).fingerprint_bytes for s in codec.store.subjects()}
        self._money: tuple[str, dict[str, Any]] | None = None

    def _fresh(self, record: dict[str, Any]) -> dict[str, Any]:
        copy = dict(record)
        if "event_id" in copy:
            copy["event_id"] = f"bad-{self.rng.getrandbits(64):016x}"
        return copy

    def undecodable(self, subject: str, record: dict[str, Any]) -> tuple[bytes, str]:
        """Bytes that are not single-object Avro; returns (value, reason)."""
        rng = self.rng
        reason = rng.choice(("json_payload", "truncated", "trailing_bytes", "empty"))
        rec = self._fresh(record)
        if reason == "json_payload":  # a producer that wrote JSON
            return json.dumps(rec, sort_keys=True, separators=(",", ":")).encode(), reason
        if reason == "empty":
            return b"", reason
        data = self._encoders[subject](rec)
        if reason == "truncated":  # any strict prefix of an Avro body fails to read
            return data[: -rng.randint(1, len(data) - len(MAGIC) - 8)], reason
        return data + rng.randbytes(rng.randint(1, 8)), reason

    def unknown_fingerprint(self, subject: str, record: dict[str, Any]) -> tuple[bytes, str]:
        """A valid body behind a fingerprint that no kept version of ``subject`` has."""
        rng = self.rng
        body = self._encoders[subject](self._fresh(record))[len(MAGIC) + 8:]
        others = sorted(s for s in self._latest if s != subject)
        if others and rng.random() < 0.5:
            return MAGIC + self._latest[rng.choice(others)] + body, "other_subject"
        fingerprint = rng.randbytes(8)
        while fingerprint in self._known:
            fingerprint = rng.randbytes(8)
        return MAGIC + fingerprint + body, "unregistered"

    def remember(self, subject: str, record: dict[str, Any]) -> None:
        """Keep ``record`` as the template for money rules when it carries an amount."""
        if "amount_cents" in record:
            self._money = (subject, record)

    def invalid(self, subject: str, record: dict[str, Any],
                ts: int) -> tuple[str, bytes, str, dict[str, Any]]:
        """A record that decodes but breaks one row rule.

        The four rules are picked evenly. A money rule on a template without an
        amount uses the most recent bid or order instead, re-timed to ``ts``.

        Returns:
            (subject, value, reason, record as encoded).
        """
        rng = self.rng
        reason = rng.choice(INVALID_REASONS)
        money_rule = reason in ("non_positive_amount", "unsupported_currency")
        if money_rule and "amount_cents" not in record:
            if self._money is None:
                reason = rng.choice(("empty_id", "future_event_time"))
            else:
                subject, record = self._money[0], {**self._money[1], "event_time": ts}
        rec = self._fresh(record)
        if reason == "empty_id":
            rec[rng.choice([f for f in _ID_FIELDS if f in rec])] = ""
        elif reason == "future_event_time":
            time_field = "updated_at" if subject == USER_PROFILE else "event_time"
            rec[time_field] = ts + FUTURE_LIMIT_MS + rng.randint(60_000, 6 * FUTURE_LIMIT_MS)
        elif reason == "non_positive_amount":
            rec["amount_cents"] = -rng.randint(1, max(1, abs(int(rec["amount_cents"]))))
        else:
            rec["currency"] = rng.choice(_OTHER_CURRENCIES)
        return subject, self._encoders[subject](rec), reason, rec


@dataclass(order=True)
class _Held:
    threshold: int
    seq: int
    item: Item = field(compare=False)
    late: bool = field(compare=False)


class DelayLine:
    """Moves some valid records later in the publish sequence; everything else passes in order.

    Picks are drawn per record as it enters (``out_of_order`` and ``late``
    fractions of *all* records) and given to the next record that can take
    them: a valid event record (not a profile), which for ``late`` must leave
    room before the end of the run. Items must arrive in timestamp order.

    Args:
        partitions: partition count per topic.
        delayable: topics whose records may be delayed.
        out_of_order: share of records to delay within the bound.
        late: share of records to delay beyond it.
        bound_ms: the watermark bound.
        late_min_ms: smallest lateness, per partition of the topic.
        late_max_ms: largest lateness.
        rng: the delay stream's random source.
    """

    def __init__(self, *, partitions: Mapping[str, int], delayable: set[str],
                 out_of_order: float, late: float, bound_ms: int, late_min_ms: int,
                 late_max_ms: int, rng: random.Random) -> None:
        self.partitions = dict(partitions)
        self.delayable = delayable
        self.f_ooo, self.f_late = out_of_order, late
        self.bound, self.late_min, self.late_max = bound_ms, late_min_ms, late_max_ms
        self.rng = rng
        self.lookahead_ms = late_max_ms + 60_000
        self.owed_ooo = 0
        self.owed_late = 0
        self._seq = 0
        self._global_max: int | None = None
        # topic -> per-partition max timestamp published (None: nothing yet)
        self._published: dict[str, list[int | None]] = {}
        # (topic, partition) -> last timestamp that entered (the whole run once exhausted)
        self._entered: dict[tuple[str, int], int] = {}
        self._exhausted = False
        self._ooo: list[_Held] = []  # heap by release deadline
        self._late: dict[str, list[_Held]] = {}  # topic -> heap by partition-min threshold
        self._late_global: list[_Held] = []  # fallback near the end: heap by global threshold

    # ----------------------------------------------------------- bookkeeping
    def _split_min(self, topic: str, entered: bool = False) -> int | None:
        if entered:
            values = [self._entered.get((topic, p)) for p in range(self.partitions[topic])]
        else:
            values = self._published.get(topic, [])
        present = [v for v in values if v is not None]
        return min(present) if present else None

    def _note(self, item: Item) -> None:
        per = self._published.setdefault(item.topic, [None] * self.partitions[item.topic])
        current = per[item.partition]
        if current is None or item.ts > current:
            per[item.partition] = item.ts
        if self._global_max is None or item.ts > self._global_max:
            self._global_max = item.ts

    def _emit(self, item: Item, delayed: bool) -> Item:
        if delayed:
            lag = None if self._global_max is None else self._global_max - item.ts
            split = self._split_min(item.topic)
            item.lag_ms = lag
            item.partition_lag_ms = None if split is None else split - item.ts
            if lag is None or lag <= 0:
                item.kind = VALID
            elif lag <= self.bound:
                item.kind = OUT_OF_ORDER
            else:
                item.kind = LATE
        self._note(item)
        return item

    def _hold(self, item: Item, threshold: int, late: bool) -> None:
        self._seq += 1
        held = _Held(threshold, self._seq, item, late)
        if not late:
            heapq.heappush(self._ooo, held)
        else:
            heapq.heappush(self._late.setdefault(item.topic, []), held)

    # -------------------------------------------------------------- decisions
    def _room_for_late(self, item: Item) -> int | None:
        """Largest partition-min lateness the rest of the run can give ``item`` (None: unknown)."""
        if not self._exhausted:
            return None
        split = self._split_min(item.topic, entered=True)
        return None if split is None else split - item.ts

    def _decide(self, item: Item) -> bool:
        """Hold ``item`` if a pick is owed and it can take it. True when held."""
        if item.kind != VALID or item.topic not in self.delayable:
            return False
        want_late = self.owed_late > 0
        if want_late and self.owed_ooo > 0:
            want_late = self.rng.random() < self.owed_late / (self.owed_late + self.owed_ooo)
        if want_late:
            room = self._room_for_late(item)
            high = self.late_max if room is None else min(self.late_max, room)
            if high >= self.late_min:
                self.owed_late -= 1
                self._hold(item, item.ts + self.rng.randint(self.late_min, high), True)
                return True
            if self.owed_ooo == 0:
                return False
        if self.owed_ooo > 0:
            self.owed_ooo -= 1
            self._hold(item, item.ts + self.rng.randint(max(1, self.bound // 20),
                                                        max(1, self.bound)), False)
            return True
        return False

    def _on_exhausted(self) -> None:
        """The run's end is known: retarget late records that could no longer be released."""
        self._exhausted = True
        last = max(self._entered.values(), default=None)
        for topic, heap in self._late.items():
            keep = []
            for held in heap:
                room = self._room_for_late(held.item)
                lateness = held.threshold - held.item.ts
                if room is not None and room >= lateness:
                    keep.append(held)
                elif room is not None and room > self.bound:
                    held.threshold = held.item.ts + room
                    keep.append(held)
                else:  # fall back to the global maximum, or release at the end
                    gap = 0 if last is None else last - held.item.ts
                    held.threshold = held.item.ts + min(lateness, max(gap, 0))
                    heapq.heappush(self._late_global, held)
            heapq.heapify(keep)
            self._late[topic] = keep

    # ------------------------------------------------------------------- run
    def run(self, items: Iterator[Item]) -> Iterator[Item]:
        """The publish sequence: ``items`` with some valid ones moved later, kinds final."""
        buffer: deque[Item] = deque()
        rng = self.rng
        while True:
            while not self._exhausted and (
                    not buffer or buffer[-1].ts < buffer[0].ts + self.lookahead_ms):
                nxt = next(items, None)
                if nxt is None:
                    self._on_exhausted()
                    break
                self._entered[(nxt.topic, nxt.partition)] = nxt.ts
                if self.f_ooo and rng.random() < self.f_ooo:
                    self.owed_ooo += 1
                if self.f_late and rng.random() < self.f_late:
                    self.owed_late += 1
                buffer.append(nxt)
            if not buffer:
                break
            item = buffer.popleft()
            if self._decide(item):
                continue
            yield from self._publish(item)
        # End of the run: whatever is still held goes out now, oldest first.
        rest = [h for heap in self._late.values() for h in heap] + self._late_global + self._ooo
        for held in sorted(rest, key=lambda h: (h.item.ts, h.seq)):
            yield self._emit(held.item, delayed=True)

    def _publish(self, item: Item) -> Iterator[Item]:
        # Out-of-order records go out before anything later than their deadline.
        while self._ooo and self._ooo[0].threshold < item.ts:
            held = heapq.heappop(self._ooo)
            out = self._emit(held.item, delayed=True)
            if out.kind == VALID:
                self.owed_ooo += 1  # nothing later was published yet: try another record
            yield out
        yield self._emit(item, delayed=False)
        heap = self._late.get(item.topic)
        if heap:
            split = self._split_min(item.topic)
            while heap and split is not None and heap[0].threshold <= split:
                yield self._emit(heapq.heappop(heap).item, delayed=True)
        glob = self._late_global
        while glob and self._global_max is not None and glob[0].threshold <= self._global_max:
            yield self._emit(heapq.heappop(glob).item, delayed=True)
