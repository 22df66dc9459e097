"""One bad periodic task never stops beat: it is disabled with the reason, and every other schedule keeps running.

django-celery-beat builds one entry per enabled row. A row whose schedule cannot be built (a solar
schedule without ephem, a crontab field out of range, a removed schedule row) either raises through
beat's start, so beat exits and takes every schedule with it, or is skipped silently and stays
enabled. A row naming a task no module registers would be sent anyway and fail on every worker.
The guarded entry disables such a row, records why (ScheduleFault, an alarm on the status screen)
and lets the scheduler skip it.
"""

from __future__ import annotations

import logging

from celery import Celery
from django.db import DatabaseError, transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

from common.monitoring.models import ScheduleFault

logger = logging.getLogger(__name__)


class UnrunnableSchedule(ValueError):
    """Raised instead of the build error: django-celery-beat skips an entry that raises ValueError."""


def disable_unrunnable_schedule(*, name: str, task: str, reason: str) -> None:
    """Disable the periodic task `name` and record `reason`; idempotent, so every beat may call it."""
    with transaction.atomic():
        for row in PeriodicTask.objects.select_for_update().filter(name=name, enabled=True):
            row.enabled = False
            row.save()  # save(), not update(): bumps django-celery-beat's change marker, so every beat reloads
        ScheduleFault.objects.update_or_create(
            name=name, defaults={"task": task, "reason": reason[:2000], "disabled_at": timezone.now()}
        )
    logger.error(
        "beat disabled periodic task %r (%s): %s",
        name,
        task,
        reason,
        extra={"event": "beat.schedule_disabled", "periodic_task": name, "task": task, "reason": reason},
    )


def _build_problem(entry: ModelEntry, app: Celery) -> str | None:
    if entry.model.pk is not None and not entry.model.enabled:
        return None  # django-celery-beat disabled it itself (e.g. its schedule row was deleted)
    # Beat imports every app's tasks before it builds its scheduler; anything else building entries (a test, a
    # shell) must import them first. Not here: re-running the import inside beat or a worker disturbs it.
    if entry.task not in app.tasks:
        return f"unknown task {entry.task!r}: no installed app registers it"
    return None


class GuardedModelEntry(ModelEntry):
    """django-celery-beat's entry, except that a row it cannot run is disabled with the reason instead."""

    def __init__(self, model: PeriodicTask, app: Celery | None = None) -> None:
        try:
            super().__init__(model, app=app)
        except Exception as exc:
            reason = f"schedule cannot be built: {type(exc).__name__}: {exc}"
        else:
            problem = _build_problem(self, self.app)
            if problem is None:
                return
            reason = problem
        try:
            disable_unrunnable_schedule(name=model.name, task=model.task, reason=reason)
        except DatabaseError as exc:  # skipped this time all the same; the next reload tries again
            logger.exception("could not disable periodic task %r: %r", model.name, exc)
        raise UnrunnableSchedule(reason)


def install_schedule_guard() -> None:
    """Make every DatabaseScheduler (whatever --scheduler alias named it) build guarded entries."""
    DatabaseScheduler.Entry = GuardedModelEntry
