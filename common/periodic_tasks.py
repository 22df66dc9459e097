"""Register a periodic task in code: one django-celery-beat row per name, created once and updated in place.

Call it from a post_migrate handler (the tables exist then, and AppConfig.ready() must not touch the
database): see docs/tasks.md "Registering a periodic task in code".
"""

from __future__ import annotations

from celery.schedules import crontab as crontab_schedule
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

PERIODS = {choice for choice, _label in IntervalSchedule.PERIOD_CHOICES}


def _schedule_fields(*, every: int | None, period: str | None, crontab: crontab_schedule | None) -> dict:
    if (every is None) == (crontab is None):
        raise ValueError("give exactly one of every= (with an optional period=) or crontab=")
    if crontab is not None:
        if period is not None:
            raise ValueError("period= goes with every=, not with crontab=")
        if not isinstance(crontab, crontab_schedule):
            raise ValueError(f"crontab= must be a celery.schedules.crontab, got {crontab!r}")
        cron = CrontabSchedule.from_schedule(crontab)  # an existing row, or a new unsaved one
        cron.save()
        return {"crontab": cron, "interval": None}
    period = period or IntervalSchedule.SECONDS
    if period not in PERIODS:
        raise ValueError(f"period= must be one of {sorted(PERIODS)}, got {period!r}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every= must be a whole number of {period} >= 1, got {every!r}")
    interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=period)
    return {"interval": interval, "crontab": None}


def register_periodic_task(
    *,
    name: str,
    task: str,
    every: int | None = None,
    period: str | None = None,
    crontab: crontab_schedule | None = None,
    enabled: bool = True,
    queue: str | None = None,
) -> PeriodicTask:
    """Create the periodic task `name`, or update its task, schedule and queue in place; never a second row.

    `enabled` applies when the row is created; afterwards only enabled=False changes it, so an
    operator's choice to disable a task in the admin survives every later migrate.
    """
    if not name or not task:
        raise ValueError("name= and task= are required")
    fields = {
        **_schedule_fields(every=every, period=period, crontab=crontab),
        "task": task,
        "queue": queue or None,
        "solar": None,
        "clocked": None,
        "one_off": False,
    }
    with transaction.atomic():
        row = PeriodicTask.objects.select_for_update().filter(name=name).first()
        if row is None:
            return PeriodicTask.objects.create(name=name, enabled=enabled, **fields)
        for field, value in fields.items():
            setattr(row, field, value)
        if not enabled:
            row.enabled = False
        row.save()  # save(), not update(): bumps django-celery-beat's change marker, so beat reloads
    return row
