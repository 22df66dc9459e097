"""Cancel a queued task by deleting its message: the SQL transport has no fanout, so `revoke` does nothing."""

from __future__ import annotations

from enum import StrEnum

from django.db import connection


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # the message was ready and is gone: the task will not run
    RUNNING = "running"  # a worker holds it (claimed): too late to cancel here
    NOT_FOUND = "not_found"  # no message with that task id (done, never sent, or another broker)


# Celery's message protocol 2 carries the task id in headers.id (protocol 1 in body.id; not used by Doorito).
# One statement: the lock and the delete cannot interleave with a claim (claims SKIP LOCKED rows).
CANCEL = (
    "WITH found AS (SELECT id, visible FROM kombu_message WHERE (payload::json -> 'headers' ->> 'id') = %s "
    "FOR UPDATE), deleted AS (DELETE FROM kombu_message m USING found WHERE m.id = found.id AND found.visible "
    "RETURNING m.id) SELECT (SELECT count(*) FROM deleted), (SELECT count(*) FROM found)"
)


def cancel_queued_task(*, task_id: str) -> CancelOutcome:
    """Delete the ready message of `task_id` so it never runs; a claimed (running) one is left alone."""
    if not task_id or not task_id.strip():
        raise ValueError("task_id must not be empty")
    with connection.cursor() as cursor:
        cursor.execute(CANCEL, [task_id.strip()])
        deleted, found = cursor.fetchone()
    if deleted:
        return CancelOutcome.CANCELLED
    return CancelOutcome.RUNNING if found else CancelOutcome.NOT_FOUND
