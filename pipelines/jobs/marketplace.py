"""The reference pipeline: every feature of the live-stream marketplace, declared once.

Run it with ``livefeat run marketplace`` (streaming) or ``livefeat backfill
marketplace`` (batch over the offline event log). Nothing about these
features is hard-coded anywhere else: the runtimes, the Feast repository and
the schema impact check all read these definitions.
"""

from __future__ import annotations

from pipelines import topics
from pipelines.features.definitions import (
    AsOf,
    ChangelogSource,
    Count,
    CountDistinct,
    Enrichment,
    Entity,
    EventSource,
    Feature,
    FeatureView,
    Mean,
    Pipeline,
    Share,
    Sum,
    hours,
    minutes,
)
from pipelines.features.expr import col, days

# -- entities ---------------------------------------------------------------------------
user = Entity("user", "user_id", "A buyer or viewer.")
seller = Entity("seller", "seller_id", "A seller running live shows.")
stream = Entity("stream", "stream_id", "One live show.")

# -- sources ----------------------------------------------------------------------------
profiles = ChangelogSource("profiles", topics.USER_PROFILE, key_field="user_id")
viewers = EventSource("viewers", topics.VIEWER_JOINED)
chats = EventSource("chats", topics.CHAT_MESSAGE)
bids = EventSource("bids", topics.BID_PLACED)
orders = EventSource("orders", topics.ORDER_PLACED)
# Orders with the buyer's profile version in force at order time.
orders_with_buyer = EventSource(
    "orders_with_buyer",
    topics.ORDER_PLACED,
    enrichments=(
        Enrichment(profiles, on="user_id", fields=("account_created_at",), prefix="buyer_"),
    ),
)

NEW_ACCOUNT_MAX_AGE = days(7)

# -- views ------------------------------------------------------------------------------
user_features = FeatureView(
    "user_features",
    user,
    (
        Feature("user_bid_count_5m", Count(bids, minutes(5)), "Bids placed, last 5 minutes."),
        Feature(
            "user_bid_amount_sum_1h",
            Sum(bids, hours(1), field="amount_cents"),
            "Sum of bid amounts in cents, last hour.",
        ),
        Feature("user_order_count_24h", Count(orders, hours(24)), "Orders placed, last 24 hours."),
        Feature(
            "user_order_amount_avg_24h",
            Mean(orders, hours(24), field="amount_cents"),
            "Mean order amount in cents, last 24 hours; null without orders.",
        ),
        Feature(
            "user_distinct_streams_1h",
            CountDistinct(viewers, hours(1), field="stream_id"),
            "Distinct live shows joined, last hour.",
        ),
        Feature(
            "user_distinct_payment_methods_24h",
            CountDistinct(orders, hours(24), field="payment_method_id"),
            "Distinct payment methods used, last 24 hours.",
        ),
        Feature(
            "user_account_created_at",
            AsOf(profiles, "account_created_at", "timestamp"),
            "Account creation time from the profile in force; null before the first profile.",
        ),
        Feature(
            "user_is_verified",
            AsOf(profiles, "is_verified", "bool"),
            "Identity verified, from the profile in force.",
        ),
        Feature(
            "user_risk_tier",
            AsOf(profiles, "risk_tier", "string"),
            "LOW, MEDIUM or HIGH, from the profile in force.",
        ),
    ),
    description="Behaviour and profile of a buyer.",
)

seller_features = FeatureView(
    "seller_features",
    seller,
    (
        Feature(
            "seller_gmv_1h",
            Sum(orders, hours(1), field="amount_cents"),
            "Gross merchandise value in cents, last hour.",
        ),
        Feature("seller_order_count_1h", Count(orders, hours(1)), "Orders, last hour."),
        Feature(
            "seller_unique_buyers_1h",
            CountDistinct(orders, hours(1), field="user_id"),
            "Distinct buyers, last hour.",
        ),
        Feature(
            "seller_new_account_order_share_1h",
            Share(
                orders_with_buyer,
                hours(1),
                numerator=(col("event_time") - col("buyer_account_created_at"))
                < NEW_ACCOUNT_MAX_AGE,
            ),
            "Share of last hour's orders whose buyer's account was under 7 days old at order "
            "time; buyers without a profile count in the denominator only; null without orders.",
        ),
    ),
    description="Sales activity of a seller.",
)

stream_features = FeatureView(
    "stream_features",
    stream,
    (
        Feature(
            "stream_viewers_5m",
            CountDistinct(viewers, minutes(5), field="user_id"),
            "Distinct viewers who joined, last 5 minutes.",
        ),
        Feature("stream_chat_messages_1m", Count(chats, minutes(1)), "Chat messages, last minute."),
        Feature("stream_bids_1m", Count(bids, minutes(1)), "Bids, last minute."),
        Feature(
            "stream_flagged_chat_ratio_5m",
            Share(chats, minutes(5), numerator=col("flagged").eq(True)),
            "Flagged share of chat messages, last 5 minutes; null without messages.",
        ),
    ),
    description="Activity in one live show.",
)

PIPELINE = Pipeline(
    "marketplace",
    (user_features, seller_features, stream_features),
    description="Reference features for a live-stream marketplace.",
    read_time_features=(("user_features", "user_account_age_days", "user_account_created_at"),),
)
