"""Monitoring's configuration: the log format, beat takeover bounds and the batched result cleanup schedule."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from common.app_conf import add_beat_entries, route_tasks
from common.monitoring.structured_logging import check_log_format, logging_config

TASK_QUEUES = {"celery.backend_cleanup": "default", "common.tasks.heartbeat": "default"}


def configure(config: Any) -> None:
    """Refuse an unknown log format or a too-short takeover; log through structlog; schedule result cleanup."""
    try:
        check_log_format(config.LOG_FORMAT)
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from None
    if config.BEAT_TAKEOVER_TIMEOUT < 3:
        raise ImproperlyConfigured(
            f"BEAT_TAKEOVER_TIMEOUT: must be at least 3 seconds, got {config.BEAT_TAKEOVER_TIMEOUT}"
        )
    config.LOGGING = logging_config(config.LOG_FORMAT)
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
