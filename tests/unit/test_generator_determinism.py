"""Same seed and options, same bytes; a different seed, different bytes; options are validated."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from pipelines.errors import ConfigError
from pipelines.generator import GeneratedRecord, GeneratorOptions, generate_events
from pipelines.generator.options import default_start_ms, parse_start
from pipelines.generator.stream import partition_for


def faulted(**overrides: Any) -> GeneratorOptions:
    """Options with every fault kind switched on."""
    return GeneratorOptions(**{"out_of_order": 0.05, "late": 0.02, "bad_undecodable": 0.01,
                               "bad_unknown_fingerprint": 0.01, "bad_invalid": 0.01,
                               **overrides})


def fingerprint(records: Iterator[GeneratedRecord]) -> tuple[int, str]:
    """Count and SHA-256 of everything a publisher sends, in order."""
    digest = hashlib.sha256()
    count = 0
    for rec in records:
        count += 1
        for part in (rec.topic.encode(), str(rec.partition).encode(), rec.key,
                     str(rec.timestamp_ms).encode(), rec.value, rec.kind.encode()):
            digest.update(len(part).to_bytes(4, "little"))
            digest.update(part)
    return count, digest.hexdigest()


def test_same_seed_same_bytes() -> None:
    options = faulted(seed=42, events=8_000)
    assert fingerprint(generate_events(options)) == fingerprint(generate_events(options))


def test_same_seed_same_bytes_by_duration() -> None:
    options = faulted(seed=3, duration_s=300)
    first = fingerprint(generate_events(options))
    assert first[0] > 1_000
    assert first == fingerprint(generate_events(options))


def test_different_seed_different_bytes() -> None:
    a = fingerprint(generate_events(faulted(seed=1, events=2_000)))
    b = fingerprint(generate_events(faulted(seed=2, events=2_000)))
    assert a[0] == b[0] == 2_000
    assert a[1] != b[1]


def test_event_ids_are_unique_and_repeatable() -> None:
    def ids(seed: int) -> list[str]:
        return [r.record["event_id"] for r in generate_events(GeneratorOptions(seed=seed,
                                                                               events=3_000))
                if r.record is not None and "event_id" in r.record]

    first = ids(9)
    assert len(first) == len(set(first)) > 1_500
    assert first == ids(9)
    assert not set(first) & set(ids(10))


def test_start_time_from_seed_or_option() -> None:
    first = next(generate_events(GeneratorOptions(seed=4, events=1)))
    assert first.timestamp_ms >= default_start_ms(4)
    assert default_start_ms(4) != default_start_ms(5)
    assert default_start_ms(4) % 1000 == 0
    start = parse_start("2025-03-01T12:00:00Z")
    assert start == 1_740_830_400_000
    options = GeneratorOptions(seed=4, events=200, start_ms=start)
    stamps = [r.timestamp_ms for r in generate_events(options)]
    assert start <= min(stamps) and max(stamps) < start + 3_600_000


def test_topic_prefix_changes_only_topic_names() -> None:
    plain = list(generate_events(faulted(seed=8, events=500)))
    prefixed = list(generate_events(faulted(seed=8, events=500, topic_prefix="t1.")))
    assert [("t1." + r.topic, r.value, r.timestamp_ms) for r in plain] == [
        (r.topic, r.value, r.timestamp_ms) for r in prefixed]


# murmur2 test vectors of the Java Kafka client (signed 32-bit results).
JAVA_MURMUR2 = {b"21": -973932308, b"foobar": -790332482,
                b"a-little-bit-long-string": -985981536,
                b"a-little-bit-longer-string": -1486304829, b"abc": 479470107}


@pytest.mark.parametrize("partitions", [1, 3, 4, 12])
def test_partitions_follow_kafkas_default_partitioner(partitions: int) -> None:
    # The Java producer: Utils.toPositive(Utils.murmur2(key)) % numPartitions.
    for key, signed in JAVA_MURMUR2.items():
        assert partition_for(key, partitions) == (signed & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("kwargs", [
    {"events": 10, "duration_s": 10.0},
    {"events": -1},
    {"duration_s": 0.0},
    {"late": 1.5},
    {"out_of_order": 0.5, "late": 0.5},
    {"bound_ms": 30_000, "late_min_ms": 30_000},
    {"late_min_ms": 60_000, "late_max_ms": 30_000},
    {"shows": 0},
])
def test_invalid_options_fail_with_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        GeneratorOptions(**kwargs)  # type: ignore[arg-type]
    assert "generator option" in str(info.value)
    assert info.value.fix


def test_bad_start_fails_with_config_error() -> None:
    with pytest.raises(ConfigError, match="ISO-8601"):
        parse_start("yesterday")


def test_ten_thousand_records_unless_told_otherwise() -> None:
    assert GeneratorOptions().events == 10_000
    assert GeneratorOptions(duration_s=60).events is None
