"""The worker side of broker_cancel: a task marked cancelled after a worker claimed it is revoked there.

No query per task: the transport learns the pending marks in the claim round trip (for the messages it
claims) and in its rescue pass each second (for the ones it already holds), and hands their task ids to
the listener registered here, which adds them to Celery's own revoked set in the worker's main process.
Celery then drops such a task before it reaches a pool child (state REVOKED, message acked), exactly as
for `celery revoke`; one already running finishes. A revoked task records the skip on its mark.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_revoked, worker_init
from celery.utils.collections import LimitedSet
from celery.worker import state as worker_state
from django.db import DatabaseError, close_old_connections

from common.broker import transport
from common.broker.services.cancel import record_skip

logger = logging.getLogger(__name__)

# Marks this worker process learned, so a revoke for another reason (celery revoke, expiry) is not recorded.
_learned_marks = LimitedSet(maxlen=50_000)


def revoke_marked(task_ids: set[str]) -> None:
    """Make this worker skip the tasks with these ids (Celery's revoked set), remembering they were marks."""
    new = {task_id for task_id in task_ids if task_id not in _learned_marks}
    for task_id in new:
        _learned_marks.add(task_id)
    worker_state.revoked.update(new)


@worker_init.connect
def listen_for_cancel_marks(**kwargs: Any) -> None:
    """In the worker's main process: the transport's cancel marks become Celery revokes."""
    if revoke_marked not in transport.cancel_listeners:
        transport.cancel_listeners.append(revoke_marked)


@task_revoked.connect
def record_skipped_mark(request: Any = None, **kwargs: Any) -> None:
    """Record on its mark that a cancelled task was skipped; a database error here only loses the record."""
    task_id = getattr(request, "id", None)
    if task_id is None or task_id not in _learned_marks:
        return
    try:
        close_old_connections()  # the main process's connection may have idled out
        record_skip(task_id=task_id)
    except DatabaseError as exc:  # the task was skipped all the same; the mark is pruned with the others
        logger.warning("broker.skip_unrecorded", extra={"event": "broker.skip_unrecorded", "error": str(exc)})
