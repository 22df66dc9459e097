"""The broker's own table: task ids cancelled after a worker had already claimed their message."""

from django.db import models
from django.utils import timezone


class CancelledTask(models.Model):
    """A task cancelled while a worker held its message (ETA, countdown, prefetched): the worker skips it."""

    task_id = models.CharField(primary_key=True, max_length=255)
    cancelled_at = models.DateTimeField(default=timezone.now)
    # Set when a worker skipped the task instead of running it; null while the mark waits (or came too late).
    skipped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "broker_cancelled_task"

    def __str__(self) -> str:
        return self.task_id
