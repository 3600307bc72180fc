"""The reference domain's topics and the schema subject each one carries.

A subject is named after its topic (schemas/avro/<topic>/v<N>.avsc).
"""

from __future__ import annotations

VIEWER_JOINED = "livestream.viewer_joined"
CHAT_MESSAGE = "livestream.chat_message"
BID_PLACED = "livestream.bid_placed"
ORDER_PLACED = "livestream.order_placed"
USER_PROFILE = "users.profile"

EVENT_TOPICS: tuple[str, ...] = (VIEWER_JOINED, CHAT_MESSAGE, BID_PLACED, ORDER_PLACED)
"""Append-only behavioural event topics."""

CHANGELOG_TOPICS: tuple[str, ...] = (USER_PROFILE,)
"""Compacted topics keyed by entity id, carrying versions of an entity."""

REFERENCE_TOPICS: tuple[str, ...] = EVENT_TOPICS + CHANGELOG_TOPICS
