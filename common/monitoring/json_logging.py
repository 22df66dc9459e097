"""LOG_FORMAT=json for Celery processes: keep Django's LOGGING instead of Celery's own handlers.

Without this, Celery's worker gives the task logger and the pool's logger their
own plain-text handlers, so some lines would not be JSON.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from celery.utils.log import get_multiprocessing_logger
from django.conf import settings


def configure_json_logging(loglevel: int | str | None = None, **_kwargs: Any) -> None:
    """Celery's setup_logging receiver: apply settings.LOGGING (JSON) to everything, pool and stdout included."""
    logging.config.dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)
    pool_logger = get_multiprocessing_logger()
    if pool_logger is not None:
        pool_logger.handlers = []
        pool_logger.propagate = True
        pool_logger.setLevel(logging.ERROR)  # as Celery does: its INFO lines are fork chatter
    from celery import current_app

    # print() in a task becomes a log record too, so it is JSON like everything else.
    # A name, not a number: Celery passes it on via the environment, where only a name parses back
    # (celery-types declares an int).
    current_app.log.redirect_stdouts(loglevel="WARNING")  # type: ignore[arg-type]
