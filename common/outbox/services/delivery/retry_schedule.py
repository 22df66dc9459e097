"""When to try a failed delivery again."""

from __future__ import annotations

import random
from datetime import datetime
from email.utils import parsedate_to_datetime

from django.conf import settings
from django.utils import timezone


def next_delay(*, attempts_made: int, retry_after: float | None = None) -> float | None:
    """Seconds until the next attempt after `attempts_made` failures (jittered, >= Retry-After), None if exhausted."""
    schedule = settings.OUTBOX_RETRY_SCHEDULE
    if attempts_made > len(schedule):
        return None
    jitter = settings.OUTBOX_RETRY_JITTER
    delay = schedule[attempts_made - 1] * random.uniform(1 - jitter, 1 + jitter)
    if retry_after is not None:
        # Honour the receiver's Retry-After, but a hostile or buggy value (days) must not park a
        # delivery beyond our own longest step (or an hour, whichever is longer).
        delay = max(delay, min(retry_after, float(max(*schedule, 3600))))
    return delay


def parse_retry_after(*, value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or HTTP-date), None if absent or unparseable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or timezone.now())).total_seconds())
