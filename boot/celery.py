"""The Celery application. Settings load first, so tasks see a configured Django."""

import os
import sys

import configurations
from celery import Celery
from celery.signals import task_postrun, task_prerun
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from common.monitoring.celery_logging import StructlogWorkerStep

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "boot.settings")
# Remembered so boot.wsgi can refuse to serve a configuration nobody chose.
CONFIGURATION_DEFAULTED = "DJANGO_CONFIGURATION" not in os.environ
os.environ.setdefault("DJANGO_CONFIGURATION", "Dev")

CONFIGURATION_ERROR_EXIT_STATUS = 3

try:
    configurations.setup()
except ImproperlyConfigured as exc:
    # One line naming the variable beats a traceback through Celery's loader. Exit status 3 is
    # gunicorn's "worker failed to boot": it halts instead of restarting the worker forever.
    print(f"Configuration error: {exc}", file=sys.stderr)
    raise SystemExit(CONFIGURATION_ERROR_EXIT_STATUS) from None

app = Celery("doorito")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

if settings.DJANGO_STRUCTLOG_CELERY_ENABLED:
    # django-structlog's worker half: binds the sender's context (request_id, parent task) in each task
    # and logs task_started/task_succeeded/task_failed. Its publishing half is connected by its app.
    app.steps["worker"].add(StructlogWorkerStep)

# The smoke task, importable as the Redis runtime documents it: `from boot.celery import heartbeat`.
from common.monitoring.tasks import heartbeat  # noqa: E402 - registers on the app created just above

# Celery's Django fixup closes every database connection before and after each task unless
# CELERY_DB_REUSE_MAX is set, so each task paid for a new PostgreSQL connection (~4 ms on loopback,
# a third of a webhook's commit-to-receipt time) before its first query. Instead, treat tasks like
# Django treats requests: close only connections that are broken or older than CONN_MAX_AGE.
app.conf.CELERY_DB_REUSE_MAX = float("inf")  # the fixup's own recycling never triggers


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(task=None, **kwargs) -> None:
    if not getattr(task.request, "is_eager", False):  # an eager task runs inside its caller's transaction
        from django.db import close_old_connections

        close_old_connections()


__all__ = ["app", "heartbeat"]
