"""The simulation's entities, rates and constants (see :mod:`pipelines.generator.model`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

COUNTRIES = (("US", 82), ("CA", 6), ("GB", 4), ("AU", 3), ("MX", 3), ("DE", 2))
FRAUD_COUNTRIES = ("US", "NG", "RU", "BR", "VN", "ID", "RO", "UA")
DEVICES = ("IOS", "ANDROID", "WEB")
UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
UUID_SET = (0x4000 << 64) | (0x8000 << 48)


class Event(NamedTuple):
    """One domain event: its subject (reference topic), event time, Kafka key and record."""

    subject: str
    time_ms: int
    key: str
    record: dict[str, Any]


@dataclass(frozen=True)
class MarketParams:
    """Rates and sizes of the simulated marketplace (per show unless said otherwise).

    ``steady`` turns the marketplace stationary at the minute scale (see
    :class:`~pipelines.generator.model.Marketplace`): every show is equally popular,
    a show that ends is replaced at once (so exactly ``shows`` run at all times),
    new shows draw no opening crowd and chat has no bursts. Arrival, chat, bid and
    order rates per show stay what the other fields say.
    """

    sellers: int = 400
    show_minutes: tuple[float, float] = (20.0, 90.0)
    viewer_arrivals_per_min: float = 14.0
    viewer_stay_s: float = 420.0
    chat_per_viewer_per_min: float = 0.25
    auction_gap_s: tuple[float, float] = (15.0, 45.0)
    auction_length_s: tuple[float, float] = (30.0, 60.0)
    buy_now_per_min: float = 0.4
    new_account_share: float = 0.04
    returning_share: float = 0.45
    steady: bool = False


@dataclass(slots=True, eq=False)
class User:
    """A buyer (or a fraudster) and the state the simulation keeps about them."""

    id: str
    created_ms: int
    country: str
    verified: bool
    risk: str
    device: str
    payment_methods: list[str]
    fraud: bool = False
    profile_ms: int = -1
    shows: list[Show] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Auction:
    """An auction running in a show."""

    id: str
    start_price: int
    ends_ms: int
    bidders: dict[str, int]
    price: int = 0
    leader: str | None = None
    extensions: int = 0
    chain_active: bool = True
    done: bool = False


@dataclass(slots=True, eq=False)
class Show:
    """A live show and its current audience."""

    id: str
    seller_id: str
    seller_index: int
    popularity: float
    started_ms: int
    viewers: list[str] = field(default_factory=list)
    where: dict[str, int] = field(default_factory=dict)
    live: bool = True
    auction: Auction | None = None
    burst_until: int = 0

    def add(self, user_id: str) -> None:
        """A viewer joins (O(1))."""
        self.where[user_id] = len(self.viewers)
        self.viewers.append(user_id)

    def remove(self, user_id: str) -> None:
        """A viewer leaves (O(1), swap with the last)."""
        index = self.where.pop(user_id, None)
        if index is None:
            return
        last = self.viewers.pop()
        if index < len(self.viewers):
            self.viewers[index] = last
            self.where[last] = index


def increment(price: int) -> int:
    """Minimum raise over ``price`` (cents), like auction sites' bid tables."""
    if price < 1_000:
        return 100
    if price < 5_000:
        return 250
    if price < 20_000:
        return 500
    return 1_000
