"""Time options of the CLI (``--from``, ``--to``): ISO 8601 or epoch milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime

import click


def parse_time(text: str, option: str) -> int:
    """Epoch ms from an ISO-8601 time (UTC when no offset is given; ``Z`` accepted) or an
    epoch-ms integer. Raises ``click.BadParameter`` naming ``option`` otherwise."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(
            f"{text!r} is neither ISO 8601 (2024-05-01 or 2024-05-01T12:00:00Z) nor epoch ms",
            param_hint=option,
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def parse_optional_time(value: str | None, option: str) -> int | None:
    """:func:`parse_time`, passing None through (option not given)."""
    return None if value is None else parse_time(value, option)
