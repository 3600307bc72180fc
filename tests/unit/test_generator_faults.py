"""Fault injection: fractions, decode failures by class, row rules, lateness and ordering.

Every property is recomputed here from the publish sequence itself (timestamps,
bytes, decoded values), not read from the generator's own bookkeeping.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from pipelines.errors import CorruptRecordError, UnknownFingerprintError
from pipelines.generator import GeneratedRecord, GeneratorOptions, generate_events
from pipelines.topics import EVENT_TOPICS, USER_PROFILE
from schemas.codec import SingleObjectCodec
from schemas.store import SchemaStore

BOUND = 5_000
LATE_MIN = 30_000
FRACTIONS = {"out_of_order": 0.05, "late": 0.03, "undecodable": 0.01,
             "unknown_fingerprint": 0.012, "invalid": 0.02}
N = 30_000
ID_FIELDS = ("event_id", "stream_id", "seller_id", "user_id", "auction_id", "order_id")


@pytest.fixture(scope="module")
def codec() -> SingleObjectCodec:
    return SingleObjectCodec(SchemaStore.load())


@pytest.fixture(scope="module")
def run() -> list[GeneratedRecord]:
    options = GeneratorOptions(
        seed=11, events=N, out_of_order=FRACTIONS["out_of_order"], late=FRACTIONS["late"],
        bad_undecodable=FRACTIONS["undecodable"],
        bad_unknown_fingerprint=FRACTIONS["unknown_fingerprint"],
        bad_invalid=FRACTIONS["invalid"], bound_ms=BOUND, late_min_ms=LATE_MIN,
        late_max_ms=120_000,
    )
    return list(generate_events(options))


def row_violations(subject: str, record: dict[str, Any], timestamp_ms: int) -> set[str]:
    """The row rules of the spec, written out here independently of the generator."""
    broken = set()
    if any(record.get(f) == "" for f in ID_FIELDS):
        broken.add("empty_id")
    if "amount_cents" in record and record["amount_cents"] < 0:
        broken.add("non_positive_amount")
    if "currency" in record and record["currency"] != "USD":
        broken.add("unsupported_currency")
    when = record["updated_at"] if subject == USER_PROFILE else record["event_time"]
    if when > timestamp_ms + 3_600_000:
        broken.add("future_event_time")
    return broken


def test_record_count_and_sequence_numbers(run: list[GeneratedRecord]) -> None:
    assert len(run) == N
    assert [r.seq for r in run] == list(range(N))


def test_fractions_are_honoured(run: list[GeneratedRecord]) -> None:
    kinds = Counter(r.kind for r in run)
    for kind, fraction in FRACTIONS.items():
        expected = fraction * N
        # Bad kinds are independent draws (sd ~ 3-4 % here); delays lose a little at the
        # very end of the run, where nothing later is left to publish.
        tolerance = 0.2 if kind in ("undecodable", "unknown_fingerprint", "invalid") else 0.15
        assert abs(kinds[kind] - expected) <= tolerance * expected, (kind, kinds[kind], expected)
    assert kinds["valid"] == N - sum(kinds[k] for k in FRACTIONS)


def test_every_sub_reason_occurs(run: list[GeneratedRecord]) -> None:
    reasons = Counter((r.kind, r.reason) for r in run if r.reason is not None)
    for kind, names in {
        "undecodable": ("json_payload", "truncated", "trailing_bytes", "empty"),
        "unknown_fingerprint": ("unregistered", "other_subject"),
        "invalid": ("empty_id", "non_positive_amount", "unsupported_currency", "future_event_time"),
    }.items():
        for name in names:
            assert reasons[(kind, name)] > 0, (kind, name)


def test_decodable_records_decode_to_their_record(run: list[GeneratedRecord],
                                                   codec: SingleObjectCodec) -> None:
    store = codec.store
    decoders = {s: codec.decoder(s) for s in store.subjects()}
    checked = 0
    for rec in run:
        if rec.kind in ("undecodable", "unknown_fingerprint"):
            continue
        assert rec.value[:2] == b"\xc3\x01"
        assert rec.value[2:10] == store.latest(rec.subject).fingerprint_bytes
        assert decoders[rec.subject].decode(rec.value) == rec.record
        checked += 1
    assert checked > 0.9 * N


def test_bad_records_fail_with_the_right_error(run: list[GeneratedRecord],
                                               codec: SingleObjectCodec) -> None:
    decoders = {s: codec.decoder(s) for s in codec.store.subjects()}
    for rec in run:
        if rec.kind == "undecodable":
            with pytest.raises(CorruptRecordError):
                decoders[rec.subject].decode(rec.value)
        elif rec.kind == "unknown_fingerprint":
            with pytest.raises(UnknownFingerprintError):
                decoders[rec.subject].decode(rec.value)


def test_invalid_records_break_exactly_their_rule(run: list[GeneratedRecord],
                                                  codec: SingleObjectCodec) -> None:
    for rec in run:
        if rec.kind != "invalid":
            continue
        decoded = codec.decoder(rec.subject).decode(rec.value)
        assert row_violations(rec.subject, decoded, rec.timestamp_ms) == {rec.reason}


def test_good_records_break_no_rule_and_carry_event_time(run: list[GeneratedRecord],
                                                         codec: SingleObjectCodec) -> None:
    for rec in run:
        if rec.kind not in ("valid", "out_of_order", "late"):
            continue
        decoded = codec.decoder(rec.subject).decode(rec.value)
        assert row_violations(rec.subject, decoded, rec.timestamp_ms) == set()
        when = decoded["updated_at"] if rec.subject == USER_PROFILE else decoded["event_time"]
        assert when == rec.timestamp_ms


def test_keys_and_partitions(run: list[GeneratedRecord]) -> None:
    for rec in run:
        if rec.record is None:
            continue
        field = "user_id" if rec.subject == USER_PROFILE else "stream_id"
        assert rec.key == rec.record[field].encode()
        assert 0 <= rec.partition < 4


def test_lateness_and_order_against_what_was_published_before(
        run: list[GeneratedRecord]) -> None:
    """Late: beyond the bound behind all earlier records; out of order: within it; rest in order."""
    global_max: int | None = None
    part_max: dict[str, dict[int, int]] = {}
    partition_late = 0
    late = 0
    for rec in run:
        if global_max is not None:
            lag = global_max - rec.timestamp_ms
            if rec.kind == "late":
                late += 1
                assert lag > BOUND, rec
                assert rec.topic in EVENT_TOPICS
                # Behind the slowest partition of its topic by at least the minimum delay.
                split = min(part_max[rec.topic].values()) - rec.timestamp_ms
                partition_late += split >= LATE_MIN
            elif rec.kind == "out_of_order":
                assert 0 < lag <= BOUND, rec
                assert rec.topic in EVENT_TOPICS
            else:
                assert lag <= 0, rec
        global_max = rec.timestamp_ms if global_max is None else max(global_max, rec.timestamp_ms)
        per = part_max.setdefault(rec.topic, {})
        per[rec.partition] = max(per.get(rec.partition, rec.timestamp_ms), rec.timestamp_ms)
    assert late > 0
    assert partition_late >= 0.95 * late


def test_profiles_are_never_delayed(run: list[GeneratedRecord]) -> None:
    stamps = [r.timestamp_ms for r in run if r.subject == USER_PROFILE]
    assert stamps == sorted(stamps)
