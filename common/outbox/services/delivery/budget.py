"""The time rules of webhook delivery, in one place: how long one attempt may take, and what a run and a
lease must leave room for. Settings checks (conf.py), the delivery task and the dispatcher all use these.
"""

from __future__ import annotations

from django.conf import settings

# Seconds a delivery run keeps free before its soft time limit, to record its last attempts.
RECORD_MARGIN_SECONDS = 5.0
# Seconds a lease must outlast one attempt, so the attempt is recorded before anyone else may claim it.
LEASE_RECORD_SECONDS = 1.0


def attempt_seconds(*, connect_timeout: float, read_timeout: float) -> float:
    """The wall-clock limit of one attempt, DNS and connect included."""
    return connect_timeout + read_timeout


def configured_attempt_seconds() -> float:
    """attempt_seconds for the current WEBHOOK_CONNECT_TIMEOUT and WEBHOOK_READ_TIMEOUT."""
    return attempt_seconds(connect_timeout=settings.WEBHOOK_CONNECT_TIMEOUT, read_timeout=settings.WEBHOOK_READ_TIMEOUT)


def claiming_seconds(*, soft_time_limit: float, connect_timeout: float, read_timeout: float) -> float:
    """How long a run may start attempts so the last one ends, recorded, before `soft_time_limit` (may be <= 0)."""
    attempt = attempt_seconds(connect_timeout=connect_timeout, read_timeout=read_timeout)
    return soft_time_limit - attempt - RECORD_MARGIN_SECONDS


def min_lease_seconds(*, connect_timeout: float, read_timeout: float) -> float:
    """The shortest lease that outlasts one attempt plus the time to record it."""
    return attempt_seconds(connect_timeout=connect_timeout, read_timeout=read_timeout) + LEASE_RECORD_SECONDS
