"""What an app's conf.py may add to the configuration class: task routes and beat entries.

Each app's conf.py takes the django-configurations class (boot/settings.py) as an argument, so no
app imports boot; these helpers keep every app's additions in the same shape.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured


def route_tasks(config: Any, *, queues: dict[str, str]) -> None:
    """Route each named task to its queue: the one place a task's queue is declared."""
    config.CELERY_TASK_ROUTES = {
        **config.CELERY_TASK_ROUTES,
        **{name: {"queue": queue} for name, queue in queues.items()},
    }


def add_beat_entries(config: Any, *, entries: dict[str, dict[str, Any]]) -> None:
    """Add beat entries (they go to the queue their task is routed to: no queue is given here)."""
    config.CELERY_BEAT_SCHEDULE = {**config.CELERY_BEAT_SCHEDULE, **entries}


def require_at_least(config: Any, *, names: tuple[str, ...], minimum: float) -> None:
    """ImproperlyConfigured naming the first of `names` whose value is below `minimum`."""
    for name in names:
        if getattr(config, name) < minimum:
            raise ImproperlyConfigured(f"{name}: must be at least {minimum:g}, got {getattr(config, name)}")
