"""Delete expired task and group results in short transactions."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Model
from django.utils import timezone
from django_celery_results.models import GroupResult, TaskResult

logger = logging.getLogger(__name__)


def _delete_in_batches(model: type[Model], *, cutoff: datetime, batch_size: int) -> tuple[int, int]:
    deleted = batches = 0
    while True:
        # One short transaction per batch: locks are held briefly and a crash loses no progress.
        with transaction.atomic():
            ids = list(
                model._default_manager.filter(date_done__lt=cutoff)
                .order_by("date_done")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                return deleted, batches
            count, _ = model._default_manager.filter(pk__in=ids).delete()
        deleted += count
        batches += 1


def delete_expired_results(*, expires_seconds: float, batch_size: int | None = None) -> dict:
    """Delete every result whose date_done is older than expires_seconds, at most batch_size rows per transaction."""
    batch_size = batch_size or settings.RESULT_CLEANUP_BATCH_SIZE
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    cutoff = timezone.now() - timedelta(seconds=expires_seconds)
    tasks, task_batches = _delete_in_batches(TaskResult, cutoff=cutoff, batch_size=batch_size)
    groups, group_batches = _delete_in_batches(GroupResult, cutoff=cutoff, batch_size=batch_size)
    report = {"tasks_deleted": tasks, "groups_deleted": groups, "batches": task_batches + group_batches}
    logger.info("results.cleanup", extra={"event": "results.cleanup", **report})
    return report
