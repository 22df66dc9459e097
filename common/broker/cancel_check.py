"""The worker side of broker_cancel: a task whose id was marked cancelled is skipped before it runs.

Installed on every task through CELERY_TASK_ANNOTATIONS (boot/settings.py, broker section) as
`before_start`, the last hook before the task body that may raise Ignore: a task_prerun
signal handler cannot stop a task (Celery logs and swallows its exceptions).
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.exceptions import Ignore


def skip_if_cancelled(task: Task, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise Ignore (state REVOKED) if `task_id` was cancelled with broker_cancel after a worker claimed it."""
    if task.request.is_eager:  # an eager task never went through the broker: nothing could have marked it
        return
    from common.broker.services.cancel import claim_cancellation

    if claim_cancellation(task_id=task_id):
        if not task.ignore_result:
            task.backend.mark_as_revoked(task_id, reason="cancelled (broker_cancel)", request=task.request)
        raise Ignore(f"task {task_id} was cancelled with broker_cancel")
