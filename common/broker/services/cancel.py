"""Cancel a task by id through the table: unlike `revoke` (kept in running workers' memory), it outlives restarts."""

from __future__ import annotations

from enum import StrEnum

from django.db import connection, transaction


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # the message was ready (or scheduled for its ETA) and is gone: the task will not run
    # A worker holds the message (prefetched, or running). It is marked cancelled:
    # a task that has not started yet is skipped (state REVOKED); one already running finishes.
    CLAIMED = "claimed"
    NOT_FOUND = "not_found"  # no message with that task id (done, never sent, or another broker)


# Celery's message protocol 2 carries the task id in headers.id (protocol 1 in body.id; not used by Doorito).
# One statement: the lock and the delete cannot interleave with a claim (claims SKIP LOCKED rows).
CANCEL = (
    "WITH found AS (SELECT id, visible, version FROM kombu_message WHERE (payload::json -> 'headers' ->> 'id') = %s "
    "FOR UPDATE), deleted AS (DELETE FROM kombu_message m USING found WHERE m.id = found.id "
    "AND (found.visible OR found.version = -2) "
    "RETURNING m.id) SELECT (SELECT count(*) FROM deleted), (SELECT count(*) FROM found)"
)
MARK = "INSERT INTO broker_cancelled_task (task_id, cancelled_at) VALUES (%s, now()) ON CONFLICT (task_id) DO NOTHING"
SKIP = "UPDATE broker_cancelled_task SET skipped_at = now() WHERE task_id = %s RETURNING 1"


def cancel_queued_task(*, task_id: str) -> CancelOutcome:
    """Make sure `task_id` does not start: delete its ready message, or mark it cancelled if a worker holds it."""
    if not task_id or not task_id.strip():
        raise ValueError("task_id must not be empty")
    task_id = task_id.strip()
    # One transaction: the claimed row stays locked until the mark is committed, so an ack cannot slip between.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(CANCEL, [task_id])
        deleted, found = cursor.fetchone()
        if deleted:
            return CancelOutcome.CANCELLED
        if not found:
            return CancelOutcome.NOT_FOUND
        cursor.execute(MARK, [task_id])
    return CancelOutcome.CLAIMED


def record_skip(*, task_id: str) -> bool:
    """Record that a worker skipped cancelled `task_id`; False if it has no mark (pruned, or never cancelled)."""
    with connection.cursor() as cursor:
        cursor.execute(SKIP, [task_id])
        return cursor.fetchone() is not None
