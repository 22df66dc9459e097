"""Celery tasks of the monitoring app."""

import logging

from celery import Task, shared_task

logger = logging.getLogger(__name__)


# The name predates this module (it lived in common/tasks.py): queued messages and periodic tasks use it.
@shared_task(name="common.tasks.heartbeat", bind=True)
def heartbeat(self: Task) -> dict[str, bool]:
    """Smoke test: proves a worker consumes, runs and stores a result."""
    logger.info(
        "celery.heartbeat",
        extra={"event": "celery.heartbeat", "task_id": self.request.id, "hostname": self.request.hostname},
    )
    return {"ok": True}
