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


# The SQL form of the rule, for endpoint alias `e` and a named parameter `event_type`: an empty list
# means every event, an exact name matches, and `prefix.*` matches names starting with `prefix.`.
SUBSCRIBED_SQL = """(
    e.event_types = '[]'::jsonb
    OR EXISTS (
        SELECT 1 FROM jsonb_array_elements_text(e.event_types) AS p(pattern)
        WHERE p.pattern = %(event_type)s
           OR (right(p.pattern, 2) = '.*' AND starts_with(%(event_type)s, left(p.pattern, -1)))
    )
)"""
