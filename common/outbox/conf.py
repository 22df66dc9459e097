"""The outbox's configuration: its settings' invariants, its beat entries and its task routes."""

from __future__ import annotations

import ipaddress
from typing import Any

from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from common.app_conf import add_beat_entries, require_at_least, route_tasks
from common.outbox.services.delivery.budget import (
    RECORD_MARGIN_SECONDS,
    claiming_seconds,
    min_lease_seconds,
)

TASK_QUEUES = {
    "common.tasks.deliver_outbox_events_task": "high",  # the webhook fast path
    "common.tasks.cleanup_delivered_outbox_events_task": "default",
}


def configure(config: Any) -> None:
    """Refuse outbox settings that would stall or double-send delivery; add the beat entries and routes."""
    try:
        config.OUTBOX_RETRY_SCHEDULE = [int(step) for step in config.OUTBOX_RETRY_SCHEDULE]
        if not config.OUTBOX_RETRY_SCHEDULE or min(config.OUTBOX_RETRY_SCHEDULE) < 1:
            raise ValueError("need at least one step, each >= 1")
    except ValueError as exc:
        raise ImproperlyConfigured(f"OUTBOX_RETRY_SCHEDULE: seconds, e.g. 5,300,1800: {exc}") from None
    for network in config.WEBHOOK_ALLOWED_NETWORKS:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            raise ImproperlyConfigured(f"WEBHOOK_ALLOWED_NETWORKS: {exc}") from None
    if not 0 <= config.OUTBOX_RETRY_JITTER < 1:
        raise ImproperlyConfigured(f"OUTBOX_RETRY_JITTER: must be in [0, 1), got {config.OUTBOX_RETRY_JITTER}")
    # EnvInt accepts 0, which would stall delivery silently (batch) or fail every run (pool size).
    require_at_least(
        config,
        names=(
            "OUTBOX_CLAIM_ROUNDS",
            "OUTBOX_BATCH_SIZE",
            "OUTBOX_DELIVERY_CONCURRENCY",
            "OUTBOX_SWEEP_INTERVAL_SECONDS",
        ),
        minimum=1,
    )
    if not 1 <= config.OUTBOX_CLEANUP_INTERVAL_HOURS <= 24:
        raise ImproperlyConfigured(
            f"OUTBOX_CLEANUP_INTERVAL_HOURS: must be between 1 and 24, got {config.OUTBOX_CLEANUP_INTERVAL_HOURS}"
        )
    for name in ("WEBHOOK_CONNECT_TIMEOUT", "WEBHOOK_READ_TIMEOUT"):
        if not 0 < getattr(config, name) < float("inf"):  # also refuses nan
            raise ImproperlyConfigured(f"{name}: seconds, must be positive and finite, got {getattr(config, name)}")
    timeouts = {"connect_timeout": config.WEBHOOK_CONNECT_TIMEOUT, "read_timeout": config.WEBHOOK_READ_TIMEOUT}
    if claiming_seconds(soft_time_limit=config.OUTBOX_DELIVER_SOFT_TIME_LIMIT, **timeouts) <= 0:
        raise ImproperlyConfigured(
            "OUTBOX_DELIVER_SOFT_TIME_LIMIT must exceed WEBHOOK_CONNECT_TIMEOUT + WEBHOOK_READ_TIMEOUT + "
            f"{RECORD_MARGIN_SECONDS:g} so one attempt fits and is recorded "
            f"(got {config.OUTBOX_DELIVER_SOFT_TIME_LIMIT})"
        )
    if min_lease_seconds(**timeouts) > config.OUTBOX_LEASE_SECONDS:
        raise ImproperlyConfigured(
            "OUTBOX_LEASE_SECONDS must be at least WEBHOOK_CONNECT_TIMEOUT + WEBHOOK_READ_TIMEOUT + 1 "
            "(an attempt's total deadline plus a second to record it) "
            f"({config.OUTBOX_LEASE_SECONDS} < {min_lease_seconds(**timeouts):g})"
        )
    route_tasks(config, queues=TASK_QUEUES)
    add_beat_entries(
        config,
        entries={
            "deliver-outbox-events-sweep": {
                "task": "common.tasks.deliver_outbox_events_task",
                "schedule": float(config.OUTBOX_SWEEP_INTERVAL_SECONDS),
            },
            # Half past, so it never starts with the upload cleanup at the top of the hour.
            "cleanup-delivered-outbox-events": {
                "task": "common.tasks.cleanup_delivered_outbox_events_task",
                "schedule": crontab(minute="30", hour=f"*/{config.OUTBOX_CLEANUP_INTERVAL_HOURS}"),
            },
        },
    )
