"""Celery tasks of the monitoring app."""

import logging

from celery import Task

from common.task_conventions import doorito_task

logger = logging.getLogger(__name__)


# The name predates this module (it lived in common/tasks.py): queued messages and periodic tasks use it.
@doorito_task(name="common.tasks.heartbeat")
def heartbeat(self: Task) -> dict[str, bool]:
    """Smoke test: proves a worker consumes, runs and stores a result."""
    logger.info(
        "celery.heartbeat",
        extra={"event": "celery.heartbeat", "task_id": self.request.id, "hostname": self.request.hostname},
    )
    return {"ok": True}
