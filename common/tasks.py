"""Celery tasks of the common app. Thin wrappers: the logic lives in common.services."""

import logging

from celery import shared_task
from django.conf import settings

from common.services.delivery import deliver_due
from common.services.outbox_cleanup import delete_settled_events

logger = logging.getLogger(__name__)


@shared_task(name="common.tasks.heartbeat", bind=True)
def heartbeat(self) -> dict:
    """Smoke test: proves a worker consumes, runs and stores a result."""
    logger.info(
        "celery.heartbeat",
        extra={"event": "celery.heartbeat", "task_id": self.request.id, "hostname": self.request.hostname},
    )
    return {"ok": True}


@shared_task(
    name="common.tasks.deliver_outbox_events_task",
    soft_time_limit=settings.OUTBOX_DELIVER_SOFT_TIME_LIMIT,
    time_limit=settings.OUTBOX_DELIVER_SOFT_TIME_LIMIT + 30,
    ignore_result=False,
)
def deliver_outbox_events_task() -> dict:
    """Deliver one bounded batch; re-enqueue itself while due work remains."""
    # Stop claiming early enough that the last chunk's HTTP finishes before the soft limit.
    budget = max(
        1.0,
        settings.OUTBOX_DELIVER_SOFT_TIME_LIMIT - settings.WEBHOOK_CONNECT_TIMEOUT - settings.WEBHOOK_READ_TIMEOUT - 5,
    )
    result = deliver_due(limit=settings.OUTBOX_BATCH_SIZE, time_budget=budget)
    if result["processed"] and result["remaining"]:
        deliver_outbox_events_task.apply_async(queue="high")
    return result


@shared_task(name="common.tasks.cleanup_delivered_outbox_events_task")
def cleanup_delivered_outbox_events_task() -> dict:
    """Delete settled events older than the retention period, in batches."""
    return delete_settled_events(retention_hours=settings.OUTBOX_RETENTION_HOURS, batch_size=1000)
