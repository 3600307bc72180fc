"""The simulated marketplace: referential integrity, profile versions, auctions, fraud, labels."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from typing import Any

import pytest

from pipelines.generator import Generation, GeneratorOptions
from pipelines.topics import BID_PLACED, CHAT_MESSAGE, ORDER_PLACED, USER_PROFILE, VIEWER_JOINED

DAY = 86_400_000


class Run:
    """Valid records of one faultless run, grouped by subject, in event-time order."""

    def __init__(self, generation: Generation) -> None:
        self.by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for rec in generation.records():
            assert rec.kind == "valid" and rec.record is not None
            self.by_subject[rec.subject].append(rec.record)
        self.fraud = set(generation.fraud_user_ids)
        self.chargebacks = generation.chargebacks
        self.start = generation.options.start


@pytest.fixture(scope="module")
def run() -> Run:
    # Two hours of event time with frequent fraud rings.
    options = GeneratorOptions(seed=5, duration_s=7_200, shows=12,
                               fraud_rings_per_hour=6)
    return Run(Generation(options))


def test_every_topic_has_traffic(run: Run) -> None:
    counts = {s: len(v) for s, v in run.by_subject.items()}
    assert set(counts) == {VIEWER_JOINED, CHAT_MESSAGE, BID_PLACED, ORDER_PLACED, USER_PROFILE}
    assert counts[CHAT_MESSAGE] > counts[VIEWER_JOINED] > counts[BID_PLACED] > counts[ORDER_PLACED]


def test_event_times_within_the_duration(run: Run) -> None:
    times = [r["event_time"] for s, recs in run.by_subject.items() if s != USER_PROFILE
             for r in recs]
    assert min(times) >= run.start
    assert max(times) < run.start + 7_200_000
    assert max(times) > run.start + 7_100_000


def test_profile_versions_have_increasing_updated_at(run: Run) -> None:
    versions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in run.by_subject[USER_PROFILE]:
        versions[rec["user_id"]].append(rec)
    assert any(len(v) > 1 for v in versions.values())
    for user_versions in versions.values():
        stamps = [v["updated_at"] for v in user_versions]
        assert all(a < b for a, b in itertools.pairwise(stamps))
        created = {v["account_created_at"] for v in user_versions}
        assert len(created) == 1 and created.pop() <= stamps[0]


def test_every_event_references_a_user_with_a_profile_in_force(run: Run) -> None:
    first_version: dict[str, int] = {}
    for rec in run.by_subject[USER_PROFILE]:
        first_version.setdefault(rec["user_id"], rec["updated_at"])
    for subject in (VIEWER_JOINED, CHAT_MESSAGE, BID_PLACED, ORDER_PLACED):
        for rec in run.by_subject[subject]:
            assert first_version[rec["user_id"]] <= rec["event_time"], (subject, rec)


def test_viewers_act_only_in_shows_they_joined(run: Run) -> None:
    joined = defaultdict(list)
    for rec in run.by_subject[VIEWER_JOINED]:
        joined[(rec["user_id"], rec["stream_id"])].append(rec["event_time"])
    for subject in (CHAT_MESSAGE, BID_PLACED, ORDER_PLACED):
        for rec in run.by_subject[subject]:
            times = joined[(rec["user_id"], rec["stream_id"])]
            assert times and times[0] <= rec["event_time"], (subject, rec)


def test_auction_orders_follow_a_winning_bid(run: Run) -> None:
    top: dict[str, dict[str, Any]] = {}
    for bid in run.by_subject[BID_PLACED]:
        best = top.get(bid["auction_id"])
        if best is None or bid["amount_cents"] > best["amount_cents"]:
            top[bid["auction_id"]] = bid
    wins: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for b in top.values():
        wins[(b["user_id"], b["stream_id"], b["amount_cents"])].append(b["event_time"])
    auction_orders = [o for o in run.by_subject[ORDER_PLACED] if o["amount_cents"] % 100 != 99]
    assert len(auction_orders) > 50
    for order in auction_orders:
        # The buyer placed the top bid of an auction in that show, at that price, before.
        key = (order["user_id"], order["stream_id"], order["amount_cents"])
        assert any(t < order["event_time"] for t in wins[key]), order


def test_bids_rise_within_an_auction(run: Run) -> None:
    last: dict[str, int] = {}
    wars = 0
    counts: Counter[str] = Counter()
    for bid in run.by_subject[BID_PLACED]:
        assert bid["amount_cents"] > last.get(bid["auction_id"], 0)
        last[bid["auction_id"]] = bid["amount_cents"]
        counts[bid["auction_id"]] += 1
    wars = sum(1 for n in counts.values() if n >= 10)
    assert wars > 0.2 * len(counts)


def test_fraud_accounts_are_new_and_rotate_payment_methods(run: Run) -> None:
    assert len(run.fraud) >= 10
    first: dict[str, dict[str, Any]] = {}
    for rec in run.by_subject[USER_PROFILE]:
        first.setdefault(rec["user_id"], rec)
    for uid in run.fraud:
        assert first[uid]["account_created_at"] == first[uid]["updated_at"]
        assert first[uid]["is_verified"] is False
    methods: dict[str, set[str]] = defaultdict(set)
    orders: Counter[str] = Counter()
    for order in run.by_subject[ORDER_PLACED]:
        methods[order["user_id"]].add(order["payment_method_id"])
        orders[order["user_id"]] += 1
    fraud_buyers = [u for u in orders if u in run.fraud]
    honest_buyers = [u for u in orders if u not in run.fraud]
    assert fraud_buyers and honest_buyers
    for uid in fraud_buyers:  # a new payment method for every order
        assert len(methods[uid]) == orders[uid]
    assert max(len(methods[u]) for u in honest_buyers) <= 3
    assert sum(len(methods[u]) for u in fraud_buyers) / len(fraud_buyers) > 2.5


def test_fraud_accounts_bid_in_bursts(run: Run) -> None:
    times: dict[str, list[int]] = defaultdict(list)
    for bid in run.by_subject[BID_PLACED]:
        times[bid["user_id"]].append(bid["event_time"])

    def busiest_minute(stamps: list[int]) -> int:
        best, lo = 0, 0
        for hi, t in enumerate(stamps):
            while t - stamps[lo] >= 60_000:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    fraud = [busiest_minute(times[u]) for u in run.fraud if times[u]]
    honest = sorted(busiest_minute(v) for u, v in times.items() if u not in run.fraud)
    assert fraud
    assert sorted(fraud)[len(fraud) // 2] >= 5
    assert honest[len(honest) // 2] <= 3


def test_chargebacks_label_published_orders(run: Run) -> None:
    orders = {o["order_id"]: o for o in run.by_subject[ORDER_PLACED]}
    fraud_orders = [o for o in orders.values() if o["user_id"] in run.fraud]
    assert run.chargebacks
    for cb in run.chargebacks:
        order = orders[cb["order_id"]]
        assert cb["user_id"] == order["user_id"]
        assert cb["order_time_ms"] == order["event_time"]
        assert cb["chargeback_time_ms"] >= order["event_time"] + 2 * DAY
        assert cb["fraud_account"] == (order["user_id"] in run.fraud)
    charged_fraud = [cb for cb in run.chargebacks if cb["fraud_account"]]
    assert 0.75 * len(fraud_orders) <= len(charged_fraud) < len(fraud_orders)
