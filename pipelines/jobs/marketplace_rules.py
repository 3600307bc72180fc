"""Reference fraud rules over the marketplace features, for ``livefeat backtest``.

Backtest them on generated traffic (docs/backtesting.md walks through it)::

    livefeat backtest marketplace_rules --labels labels.parquet

On the reference traffic, fraud rings are brand-new accounts that pay every
order with a new payment method, bid in bursts, and are raised to risk tier
HIGH by trust and safety 30 minutes to 3 hours *after* they struck. So:

- ``new_account_payment_method_churn`` works: high precision, most chargebacks caught;
- ``new_account_bid_burst`` (the issue's example) is precise but catches few: rings
  bid in bursts of 5 to 15, rarely more than 20 in five minutes;
- ``high_risk_tier`` does not work: at the moment of a ring's orders the tier is not
  HIGH yet, so every alert is on an honest buyer. A backtest that read the *latest*
  profile instead of the one in force at the order's time would credit it with the
  orders of the rings raised to HIGH later: the leak point-in-time retrieval prevents;
- ``busy_stream`` does not work: crowded shows have as much fraud as any other (its
  precision is the base rate). It reads stream features, looked up by the labels'
  ``stream_id``.
"""

from __future__ import annotations

from pipelines.backtest import Rule
from pipelines.jobs.marketplace import PIPELINE

__all__ = ["PIPELINE", "RULES"]

RULES = [
    Rule(
        "new_account_payment_method_churn",
        "user_account_age_days < 1 and user_distinct_payment_methods_24h >= 2",
        "An account less than a day old paying with a second payment method within 24 h.",
    ),
    Rule(
        "new_account_bid_burst",
        "user_bid_count_5m > 20 and user_account_age_days < 1",
        "More than 20 bids in five minutes from an account less than a day old.",
    ),
    Rule(
        "high_risk_tier",
        "user_risk_tier == 'HIGH'",
        "The buyer's risk tier (as in force at the order) is HIGH.",
    ),
    Rule(
        "busy_stream",
        "stream_viewers_5m > 30",
        "The order was placed in a show with more than 30 viewers joining in five minutes.",
    ),
]
