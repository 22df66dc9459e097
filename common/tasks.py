"""Celery tasks of the common app. Thin wrappers: the logic lives in common.services."""

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="common.tasks.heartbeat", bind=True)
def heartbeat(self) -> dict:
    """Smoke test: proves a worker consumes, runs and stores a result."""
    logger.info(
        "celery.heartbeat",
        extra={"event": "celery.heartbeat", "task_id": self.request.id, "hostname": self.request.hostname},
    )
    return {"ok": True}
