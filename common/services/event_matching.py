"""Which endpoints subscribe to an event type."""

from __future__ import annotations

import re

PATTERN = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?$")


def validate_event_type_pattern(*, pattern: str) -> None:
    """Raise ValueError unless `pattern` is a dotted event type, optionally ending in `.*`."""
    if not PATTERN.match(pattern):
        raise ValueError(
            f"invalid event type pattern {pattern!r}: use dotted lowercase names like file.stored or file.*"
        )


def matches(*, patterns: list[str], event_type: str) -> bool:
    """True if `patterns` is empty (all events), names `event_type`, or has a `prefix.*` covering it."""
    if not patterns:
        return True
    for pattern in patterns:
        if pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False
