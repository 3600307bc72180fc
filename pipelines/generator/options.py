"""What the generator is asked to do, and what it hands back.

:class:`GeneratorOptions` holds every knob of a run (validated on creation);
:class:`GeneratedRecord` is one record ready for Kafka, in publish order, with
the fault kind it was given so tests and benchmarks know what to expect.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipelines.errors import ConfigError
from pipelines.generator.drift import Drift
from pipelines.topics import REFERENCE_TOPICS

# Record kinds, as the manifest names them.
VALID = "valid"
OUT_OF_ORDER = "out_of_order"
LATE = "late"
UNDECODABLE = "undecodable"
UNKNOWN_FINGERPRINT = "unknown_fingerprint"
INVALID = "invalid"

KINDS: tuple[str, ...] = (VALID, OUT_OF_ORDER, LATE, UNDECODABLE, UNKNOWN_FINGERPRINT, INVALID)
"""Every kind, in manifest order."""

BAD_KINDS: tuple[str, ...] = (UNDECODABLE, UNKNOWN_FINGERPRINT, INVALID)
"""Kinds a pipeline must quarantine as bad input."""

DECODABLE_KINDS: frozenset[str] = frozenset({VALID, OUT_OF_ORDER, LATE, INVALID})
"""Kinds whose bytes decode with the codec (invalid records decode, then fail a row rule)."""

# Sub-reasons of the bad kinds.
UNDECODABLE_REASONS: tuple[str, ...] = ("json_payload", "truncated", "trailing_bytes", "empty")
UNKNOWN_FINGERPRINT_REASONS: tuple[str, ...] = ("unregistered", "other_subject")
INVALID_REASONS: tuple[str, ...] = (
    "empty_id", "non_positive_amount", "unsupported_currency", "future_event_time",
)

FUTURE_LIMIT_MS = 3_600_000
"""Row rule: an event time more than this ahead of the watermark is invalid (1 h)."""

_EPOCH_BASE = datetime(2024, 1, 1, tzinfo=UTC)
_YEAR_S = 365 * 86_400


def default_start_ms(seed: int) -> int:
    """The first event time when no ``--start`` is given: a whole second of 2024, from the seed.

    >>> default_start_ms(7) == default_start_ms(7)
    True
    """
    offset_s = random.Random(f"livefeat-start:{seed}").randrange(_YEAR_S)
    return int(_EPOCH_BASE.timestamp() * 1000) + offset_s * 1000


def parse_start(text: str) -> int:
    """An ISO-8601 time as epoch milliseconds (UTC when no offset is given).

    Raises:
        ConfigError: ``text`` is not an ISO-8601 time.
    """
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"{text!r} is not an ISO-8601 time", where="option --start",
            fix="write e.g. 2024-05-01T12:00:00Z",
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class GeneratorOptions:
    """Every knob of a generator run. Same options (and partition counts), same bytes.

    Attributes:
        seed: seeds every random choice, event ids and the default start time.
        events: stop after this many records (all kinds). Exclusive with ``duration_s``;
            10,000 when neither is given.
        duration_s: stop when event time has advanced this many seconds.
        start_ms: first event time; None means :func:`default_start_ms` of the seed.
        out_of_order: share of all records delayed within the watermark bound.
        late: share of all records delayed far beyond the bound.
        bad_undecodable: share of records whose bytes are not single-object Avro.
        bad_unknown_fingerprint: share of records naming a writer schema nobody keeps.
        bad_invalid: share of records that decode but break a row rule.
        bound_ms: the watermark's bounded out-of-orderness.
        late_min_ms: smallest delay of a late record behind its topic's partitions.
        late_max_ms: largest such delay.
        shows: mean number of live shows running at once (the traffic's scale).
        fraud_rings_per_hour: fraud rings starting per hour of event time (0: none).
        topic_prefix: prepended to every reference topic name (isolates runs).
        partitions: partition count per topic name (as published); others use
            ``default_partitions``. The generator picks partitions itself, as
            Kafka's default partitioner would, so lateness holds per partition.
        default_partitions: partition count of topics missing from ``partitions``.
        drifts: fields multiplied by a factor for a period of event time
            (:mod:`~pipelines.generator.drift`); the simulation itself is unchanged.
        steady: stationary traffic at the minute scale (``MarketParams.steady``):
            exactly ``shows`` shows at all times, all equally popular, no opening
            crowds, no chat bursts. Off, the marketplace is as bursty as a real one.
    """

    seed: int = 0
    events: int | None = None
    duration_s: float | None = None
    start_ms: int | None = None
    out_of_order: float = 0.0
    late: float = 0.0
    bad_undecodable: float = 0.0
    bad_unknown_fingerprint: float = 0.0
    bad_invalid: float = 0.0
    bound_ms: int = 5_000
    late_min_ms: int = 30_000
    late_max_ms: int = 120_000
    shows: float = 20.0
    fraud_rings_per_hour: float = 4.0
    topic_prefix: str = ""
    partitions: Mapping[str, int] = field(default_factory=dict)
    default_partitions: int = 4
    drifts: tuple[Drift, ...] = ()
    steady: bool = False

    def __post_init__(self) -> None:
        def bad(key: str, problem: str, fix: str) -> ConfigError:
            return ConfigError(problem, where=f"generator option {key}", fix=fix)

        if self.events is None and self.duration_s is None:
            object.__setattr__(self, "events", 10_000)
        if self.events is not None and self.duration_s is not None:
            raise bad("events/duration_s", "give events or duration_s, not both",
                      "pass --events N or --duration SECONDS, not both")
        if self.events is not None and self.events < 0:
            raise bad("events", f"must be >= 0, got {self.events}", "pass a count >= 0")
        if self.duration_s is not None and self.duration_s <= 0:
            raise bad("duration_s", f"must be > 0, got {self.duration_s}", "pass seconds > 0")
        for key in ("out_of_order", "late", "bad_undecodable", "bad_unknown_fingerprint",
                    "bad_invalid"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise bad(key, f"must be a fraction in [0, 1], got {value}",
                          "pass e.g. 0.01 for one record in a hundred")
        if self.fault_share > 0.9:
            raise bad("fractions", f"faults add up to {self.fault_share:.3f} of all records",
                      "keep the sum of all fault fractions at or below 0.9")
        if self.bound_ms < 0:
            raise bad("bound_ms", "must be >= 0", "pass the watermark bound in milliseconds")
        if not self.bound_ms < self.late_min_ms <= self.late_max_ms:
            raise bad("late_min_ms/late_max_ms",
                      f"need bound_ms < late_min_ms <= late_max_ms, got {self.bound_ms} < "
                      f"{self.late_min_ms} <= {self.late_max_ms}",
                      "late delays must exceed the watermark bound, e.g. 30-120 s for 5 s")
        if not 0 < self.shows <= 10_000:
            raise bad("shows", f"must be in (0, 10000], got {self.shows}", "pass e.g. 20")
        if self.fraud_rings_per_hour < 0:
            raise bad("fraud_rings_per_hour", "must be >= 0", "pass 0 to disable fraud")
        if self.default_partitions < 1 or any(n < 1 for n in self.partitions.values()):
            raise bad("partitions", "partition counts must be >= 1", "check the topics")

    @property
    def fault_share(self) -> float:
        """Sum of all fault fractions."""
        return (self.out_of_order + self.late + self.bad_undecodable
                + self.bad_unknown_fingerprint + self.bad_invalid)

    @property
    def start(self) -> int:
        """The first event time in epoch milliseconds."""
        return self.start_ms if self.start_ms is not None else default_start_ms(self.seed)

    def topic(self, subject: str) -> str:
        """The topic name a subject is published on in this run."""
        return self.topic_prefix + subject

    def partition_count(self, subject: str) -> int:
        """Partition count of the topic carrying ``subject``."""
        return self.partitions.get(self.topic(subject), self.default_partitions)

    def topics(self) -> list[str]:
        """Every topic this run publishes to."""
        return [self.topic(s) for s in REFERENCE_TOPICS]

    def as_dict(self) -> dict[str, Any]:
        """The options as plain JSON data (for the manifest; ``steady`` only when set)."""
        out: dict[str, Any] = {
            "seed": self.seed, "events": self.events, "duration_s": self.duration_s,
            "start_ms": self.start, "out_of_order": self.out_of_order, "late": self.late,
            "bad_undecodable": self.bad_undecodable,
            "bad_unknown_fingerprint": self.bad_unknown_fingerprint,
            "bad_invalid": self.bad_invalid, "bound_ms": self.bound_ms,
            "late_min_ms": self.late_min_ms, "late_max_ms": self.late_max_ms,
            "shows": self.shows, "fraud_rings_per_hour": self.fraud_rings_per_hour,
            "topic_prefix": self.topic_prefix,
            "partitions": {t: self.partition_count(s)
                           for s, t in zip(REFERENCE_TOPICS, self.topics(), strict=True)},
            "drifts": [d.as_dict() for d in self.drifts],
        }
        if self.steady:
            out["steady"] = True
        return out


@dataclass(slots=True)
class GeneratedRecord:
    """One record ready to publish, in publish order.

    Attributes:
        seq: position in the publish sequence (0-based).
        topic: Kafka topic (with the run's prefix).
        subject: schema subject (the reference topic name).
        partition: the partition the generator chose (Kafka's default partitioner on ``key``).
        key: record key bytes (``stream_id`` for livestream events, ``user_id`` for profiles).
        timestamp_ms: Kafka record timestamp; the event time, except that an invalid
            ``future_event_time`` record carries the producer's clock here and the
            skewed time in its payload.
        value: record value bytes (single-object Avro, or garbage for undecodable records).
        kind: one of :data:`KINDS`.
        reason: sub-reason of a bad kind, else None.
        record: the record as encoded, for every decodable kind; None otherwise.
        lag_ms: for delayed records, how far their timestamp is behind the largest
            timestamp published earlier on the same topic.
        partition_lag_ms: same, behind the smallest per-partition maximum of the topic.
    """

    seq: int
    topic: str
    subject: str
    partition: int
    key: bytes
    timestamp_ms: int
    value: bytes
    kind: str
    reason: str | None = None
    record: dict[str, Any] | None = None
    lag_ms: int | None = None
    partition_lag_ms: int | None = None
