"""Monitoring's configuration: the log format, beat takeover bounds and the batched result cleanup schedule."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from common.app_conf import add_beat_entries, route_tasks

TASK_QUEUES = {"celery.backend_cleanup": "default", "common.tasks.heartbeat": "default"}


def configure(config: Any) -> None:
    """Refuse an unknown log format or a too-short takeover; pick the log formatter; schedule result cleanup."""
    if config.LOG_FORMAT not in ("text", "json"):
        raise ImproperlyConfigured(f'LOG_FORMAT: must be "text" or "json", got {config.LOG_FORMAT!r}')
    if config.BEAT_TAKEOVER_TIMEOUT < 3:
        raise ImproperlyConfigured(
            f"BEAT_TAKEOVER_TIMEOUT: must be at least 3 seconds, got {config.BEAT_TAKEOVER_TIMEOUT}"
        )
    if config.LOG_FORMAT == "json":
        config.LOGGING = {
            **config.LOGGING,
            "formatters": {"plain": {"()": "common.monitoring.json_log_formatter.JsonLogFormatter"}},
        }
    route_tasks(config, queues=TASK_QUEUES)
    add_beat_entries(
        config,
        entries={
            # Replaces django-celery-beat's daily `celery.backend_cleanup` entry (disabled as a retired name at
            # each beat start, common.monitoring.services.schedule_reconciliation): frequent small cleanups
            # keep every batch short.
            "cleanup-task-results": {
                "task": "celery.backend_cleanup",
                "schedule": float(config.RESULT_CLEANUP_INTERVAL),
                "options": {"expire_seconds": config.RESULT_CLEANUP_INTERVAL},
            },
        },
    )
