"""Edge cases of the window semantics, with expected values worked out by hand from the spec.

Window: value as of t aggregates events with t - L < e <= t.
"""

from __future__ import annotations

from typing import Any

from pipelines import topics
from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.batch import run_pipeline

T = 1_700_000_000_000
MIN = 60_000
DAY = 86_400_000


def bid(i: int, t: int, user: str = "u1", amount: int = 100, stream: str = "st1") -> dict[str, Any]:
    return {
        "event_id": f"b{i}",
        "event_time": t,
        "stream_id": stream,
        "seller_id": "s1",
        "auction_id": "a1",
        "user_id": user,
        "amount_cents": amount,
        "currency": "USD",
    }


def order(
    i: int, t: int, user: str = "u1", amount: int = 1000, pm: str = "pm1", seller: str = "s1"
) -> dict[str, Any]:
    return {
        "event_id": f"o{i}",
        "event_time": t,
        "stream_id": "st1",
        "seller_id": seller,
        "order_id": f"o{i}",
        "user_id": user,
        "amount_cents": amount,
        "currency": "USD",
        "payment_method_id": pm,
        "shipping_country": "US",
    }


def profile(
    user: str, updated: int, created: int, offset: int, tier: str = "LOW"
) -> dict[str, Any]:
    return {
        "user_id": user,
        "updated_at": updated,
        "account_created_at": created,
        "country": "US",
        "is_verified": False,
        "risk_tier": tier,
        "_partition": 0,
        "_offset": offset,
    }


def rows(view: str, events: dict[str, list[dict[str, Any]]], horizon: int) -> list[dict[str, Any]]:
    return run_pipeline(PIPELINE, events, horizon_ms=horizon, created_ms=0)[view].rows


def series(view_rows: list[dict[str, Any]], feature: str) -> list[tuple[int, Any]]:
    return [(r["event_timestamp"] - T, r[feature]) for r in view_rows]


def test_event_at_t_minus_L_is_out_and_at_t_is_in() -> None:
    # bids at T and T + 5 min: at T + 5 min the first is exactly at t - L, so it has left.
    out = rows(
        "user_features", {topics.BID_PLACED: [bid(1, T), bid(2, T + 5 * MIN)]}, horizon=T + 20 * MIN
    )
    # One row per change point of the view: T (first bid), T+5m (second bid in, first out of
    # the 5-min window; the count stays 1 but the 1 h sum changes), T+10m (second bid out).
    assert series(out, "user_bid_count_5m") == [(0, 1), (5 * MIN, 1), (10 * MIN, 0)]
    assert series(out, "user_bid_amount_sum_1h") == [(0, 100), (5 * MIN, 200), (10 * MIN, 200)]


def test_two_events_in_the_same_millisecond_make_one_row() -> None:
    out = rows(
        "stream_features",
        {topics.BID_PLACED: [bid(1, T, "u1"), bid(2, T, "u2")]},
        horizon=T + 2 * MIN,
    )
    assert series(out, "stream_bids_1m") == [(0, 2), (MIN, 0)]


def test_single_event_key_rises_then_decays_to_zero_and_null() -> None:
    out = rows(
        "user_features", {topics.ORDER_PLACED: [order(1, T, amount=999)]}, horizon=T + 2 * DAY
    )
    assert series(out, "user_order_count_24h") == [(0, 1), (DAY, 0)]
    assert series(out, "user_order_amount_avg_24h") == [(0, 999.0), (DAY, None)]
    assert series(out, "user_distinct_payment_methods_24h") == [(0, 1), (DAY, 0)]


def test_horizon_cuts_decay_rows_after_the_final_watermark() -> None:
    out = rows("user_features", {topics.ORDER_PLACED: [order(1, T)]}, horizon=T + DAY - 1)
    assert series(out, "user_order_count_24h") == [(0, 1)]


def test_profile_updated_between_two_orders() -> None:
    # Buyer account created 10 days before T (old); a profile correction at T + 10 min says the
    # account was created 2 days before (new). Orders at T + 5 min and T + 15 min.
    events = {
        topics.USER_PROFILE: [
            profile("u1", T, T - 10 * DAY, 0, "LOW"),
            profile("u1", T + 10 * MIN, T - 2 * DAY, 1, "HIGH"),
        ],
        topics.ORDER_PLACED: [order(1, T + 5 * MIN), order(2, T + 15 * MIN)],
    }
    seller = rows("seller_features", events, horizon=T + 30 * MIN)
    # first order's buyer was old (share 0/1), second's new (1/2)
    assert series(seller, "seller_new_account_order_share_1h") == [(5 * MIN, 0.0), (15 * MIN, 0.5)]
    user = rows("user_features", events, horizon=T + 30 * MIN)
    assert series(user, "user_risk_tier") == [
        (0, "LOW"),
        (5 * MIN, "LOW"),
        (10 * MIN, "HIGH"),
        (15 * MIN, "HIGH"),
    ]


def test_order_without_profile_counts_in_the_denominator_only() -> None:
    events = {
        topics.USER_PROFILE: [profile("u2", T, T - DAY, 0)],
        topics.ORDER_PLACED: [order(1, T + MIN, user="u1"), order(2, T + MIN, user="u2")],
    }
    seller = rows("seller_features", events, horizon=T + 2 * MIN)
    assert series(seller, "seller_new_account_order_share_1h") == [(MIN, 0.5)]


def test_profile_in_force_at_exactly_its_updated_at() -> None:
    events = {
        topics.USER_PROFILE: [profile("u1", T, T - DAY, 0)],
        topics.ORDER_PLACED: [order(1, T, user="u1")],
    }
    seller = rows("seller_features", events, horizon=T)
    assert series(seller, "seller_new_account_order_share_1h") == [(0, 1.0)]


def test_same_millisecond_profile_versions_later_offset_wins() -> None:
    events = {topics.USER_PROFILE: [profile("u1", T, T, 7, "HIGH"), profile("u1", T, T, 3, "LOW")]}
    user = rows("user_features", events, horizon=T)
    assert series(user, "user_risk_tier") == [(0, "HIGH")]
