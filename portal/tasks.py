"""Celery tasks of the portal. Thin wrappers: the logic lives in portal.services.lifecycle."""

from celery import Task

from common.task_conventions import doorito_task
from portal.services.lifecycle import cleanup_expired_uploads, notify_expiring_files


@doorito_task(name="portal.tasks.cleanup_expired_upload_files_task")
def cleanup_expired_upload_files_task(self: Task) -> dict[str, int]:
    """Remove up to CLEANUP_UPLOADS_BATCH_SIZE expired or stuck uploads; re-enqueue while more remain."""
    result = cleanup_expired_uploads()
    if result["remaining"] and result["deleted"]:
        # Only when this run made progress: rows held by another run must not cause a busy loop.
        self.apply_async()
    return result


@doorito_task(name="portal.tasks.notify_expiring_files_task")
def notify_expiring_files_task(self: Task) -> dict:
    """Emit file.expiring once per file entering its FILE_UPLOAD_EXPIRY_NOTIFY_HOURS window."""
    return notify_expiring_files()
