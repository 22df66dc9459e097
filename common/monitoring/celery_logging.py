"""Celery processes (worker and beat) log through Django's LOGGING instead of Celery's own handlers.

Without this, Celery gives the root, task and pool loggers its own plain-text
handlers, so LOG_FORMAT=json would leave some lines that are not JSON, and bound
structlog context would be missing from them.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from celery import signals
from celery.utils.log import get_multiprocessing_logger
from django.conf import settings
from django_structlog.celery.steps import DjangoStructLogInitStep


def configure_celery_logging(loglevel: int | str | None = None, **_kwargs: Any) -> None:
    """Celery's setup_logging receiver: apply settings.LOGGING to everything, pool and stdout included."""
    logging.config.dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)
    pool_logger = get_multiprocessing_logger()
    if pool_logger is not None:
        pool_logger.handlers = []
        pool_logger.propagate = True
        pool_logger.setLevel(logging.ERROR)  # as Celery does: its INFO lines are fork chatter
    from celery import current_app

    # print() in a task becomes a log record too, so it is rendered like everything else.
    # A name, not a number: Celery passes it on via the environment, where only a name parses back
    # (celery-types declares an int).
    current_app.log.redirect_stdouts(loglevel="WARNING")  # type: ignore[arg-type]


class StructlogWorkerStep(DjangoStructLogInitStep):
    """django-structlog's worker boot step, minus the second pair of publish receivers it connects.

    Its app's ready() has connected those already; a second pair would log every task_enqueued twice.
    """

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        signals.before_task_publish.disconnect(self.receiver.receiver_before_task_publish)
        signals.after_task_publish.disconnect(self.receiver.receiver_after_task_publish)
