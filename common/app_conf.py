"""What an app's conf.py may add to the configuration class: task routes and beat entries.

Each app's conf.py takes the django-configurations class (boot/settings.py) as an argument, so no
app imports boot; these helpers keep every app's additions in the same shape.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

HIGH, DEFAULT = "high", "default"


def resolve_default_queue(config: Any) -> None:
    """Settle the default queue's name (CELERY_TASK_DEFAULT_QUEUE or CELERY_DEFAULT_QUEUE) and declare both queues."""
    name = config.CELERY_TASK_DEFAULT_QUEUE
    if config.CELERY_DEFAULT_QUEUE:
        if name not in (DEFAULT, config.CELERY_DEFAULT_QUEUE):
            raise ImproperlyConfigured(
                f"CELERY_DEFAULT_QUEUE ({config.CELERY_DEFAULT_QUEUE!r}) and CELERY_TASK_DEFAULT_QUEUE ({name!r}) "
                "name different queues: set one of them"
            )
        name = config.CELERY_DEFAULT_QUEUE
    if not name or name == HIGH:
        raise ImproperlyConfigured(f"CELERY_TASK_DEFAULT_QUEUE: a queue name other than {HIGH!r}, got {name!r}")
    config.CELERY_TASK_DEFAULT_QUEUE = config.CELERY_DEFAULT_QUEUE = name
    # One direct exchange per queue, so a message routed to one queue never lands in the other.
    config.CELERY_TASK_QUEUES = tuple(Queue(q, Exchange(q, type="direct"), routing_key=q) for q in (HIGH, name))


def route_tasks(config: Any, *, queues: dict[str, str]) -> None:
    """Route each named task to its queue ("default" meaning the configured default queue)."""
    config.CELERY_TASK_ROUTES = {
        **config.CELERY_TASK_ROUTES,
        **{
            name: {"queue": config.CELERY_TASK_DEFAULT_QUEUE if queue == DEFAULT else queue}
            for name, queue in queues.items()
        },
    }


def add_beat_entries(config: Any, *, entries: dict[str, dict[str, Any]]) -> None:
    """Add beat entries (they go to the queue their task is routed to: no queue is given here)."""
    config.CELERY_BEAT_SCHEDULE = {**config.CELERY_BEAT_SCHEDULE, **entries}


def require_at_least(config: Any, *, names: tuple[str, ...], minimum: float) -> None:
    """ImproperlyConfigured naming the first of `names` whose value is below `minimum`."""
    for name in names:
        if getattr(config, name) < minimum:
            raise ImproperlyConfigured(f"{name}: must be at least {minimum:g}, got {getattr(config, name)}")
