"""The task conventions of the background-tasks reference, in one decorator every Doorito task uses.

Explicit name, bind=True, max_retries=2, default_retry_delay=60; an unexpected error is logged with
logger.exception and retried with self.retry(exc=exc) (every task wraps an idempotent service, so a
retry is safe); success is logged with logger.info. A task run inline (eager mode, apply()) is not
retried: its caller gets the original exception.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Ignore, Reject, Retry

CONVENTIONS: dict[str, Any] = {"bind": True, "max_retries": 2, "default_retry_delay": 60}
# Celery's own control flow, never an "unexpected error".
_CONTROL_FLOW = (Retry, Ignore, Reject)


def doorito_task(*, name: str, **options: Any) -> Callable[[Callable[..., Any]], Task]:
    """shared_task(name=..., bind=True, max_retries=2, default_retry_delay=60, **options) with the logging and retry."""

    def decorate(run: Callable[..., Any]) -> Task:
        logger = logging.getLogger(run.__module__)

        @functools.wraps(run)
        def body(self: Task, *args: Any, **kwargs: Any) -> Any:
            try:
                result = run(self, *args, **kwargs)
            except _CONTROL_FLOW:
                raise
            except Exception as exc:
                logger.exception(
                    "%s failed (attempt %s of %s): %r",
                    self.name,
                    self.request.retries + 1,
                    (self.max_retries or 0) + 1,
                    exc,
                    extra={"event": "task.error", "task_name": self.name, "task_id": self.request.id},
                )
                if self.request.is_eager:
                    raise  # run inline by its caller (eager mode, apply()): the caller gets the error itself
                raise self.retry(exc=exc) from exc
            logger.info(
                "%s done: %s",
                self.name,
                result,
                extra={"event": "task.done", "task_name": self.name, "task_id": self.request.id},
            )
            return result

        return shared_task(name=name, **{**CONVENTIONS, **options})(body)

    return decorate
