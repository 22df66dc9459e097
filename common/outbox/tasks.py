"""Celery tasks of the outbox. Thin wrappers: the logic lives in common.outbox.services.

Task names keep the `common.tasks.` prefix they had before the outbox became its own app, so messages
already queued and periodic tasks already stored keep working.
"""

import logging

from celery import Task
from django.conf import settings

from common.outbox.services.cleanup import delete_settled_events
from common.outbox.services.delivery.budget import claiming_seconds
from common.outbox.services.delivery.dispatcher import deliver_due
from common.task_conventions import doorito_task

logger = logging.getLogger(__name__)


@doorito_task(
    name="common.tasks.deliver_outbox_events_task",
    soft_time_limit=settings.OUTBOX_DELIVER_SOFT_TIME_LIMIT,
    time_limit=settings.OUTBOX_DELIVER_SOFT_TIME_LIMIT + 30,
    ignore_result=False,
)
def deliver_outbox_events_task(self: Task) -> dict:
    """Deliver one bounded batch; re-enqueue itself while due work remains."""
    # Stop claiming early enough that the last chunk's HTTP finishes before the soft limit.
    budget = max(
        1.0,
        claiming_seconds(
            soft_time_limit=settings.OUTBOX_DELIVER_SOFT_TIME_LIMIT,
            connect_timeout=settings.WEBHOOK_CONNECT_TIMEOUT,
            read_timeout=settings.WEBHOOK_READ_TIMEOUT,
        ),
    )
    result = deliver_due(limit=settings.OUTBOX_BATCH_SIZE, time_budget=budget)
    if result["processed"] and result["remaining"]:
        self.apply_async()
    return result


@doorito_task(name="common.tasks.cleanup_delivered_outbox_events_task")
def cleanup_delivered_outbox_events_task(self: Task) -> dict:
    """Delete settled events older than the retention period, in batches."""
    return delete_settled_events(retention_hours=settings.OUTBOX_RETENTION_HOURS, batch_size=1000)
