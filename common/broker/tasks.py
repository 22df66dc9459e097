"""Celery tasks of the broker app. Thin wrappers: the logic lives in common.broker.services."""

from celery import Task

from common.broker.services.cleanup import cleanup_broker_messages
from common.task_conventions import doorito_task


@doorito_task(name="common.broker.tasks.cleanup_broker_messages_task")
def cleanup_broker_messages_task(self: Task) -> dict:
    """Delete stale rows, spent cancel marks and dead consumers' queues, restore expired in-flight rows; the counts."""
    result = cleanup_broker_messages()
    return {
        "stale_deleted": result.stale_deleted,
        "expired_restored": result.expired_restored,
        "cancel_marks_pruned": result.cancel_marks_pruned,
        "dead_queues_dropped": result.dead_queues_dropped,
        "broadcasts_deleted": result.broadcasts_deleted,
    }
