"""Maintenance of kombu_message: drop what the stock transport left, revive what dead consumers held."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from common.broker.fanout import prune_bindings
from common.broker.sql import RESTORE_EXPIRED

# The stock transport marks a consumed row invisible (version >= 1) and never touches it again.
DELETE_STALE = "DELETE FROM kombu_message WHERE NOT visible AND version >= 0"
# A cancel mark is needed while its message exists; after that (plus a visibility timeout of grace,
# for an early-acked message whose task is about to start) it only records what happened.
PRUNE_CANCEL_MARKS = (
    "DELETE FROM broker_cancelled_task c "
    "WHERE c.cancelled_at < now() - make_interval(secs => %s) "
    "AND NOT EXISTS (SELECT 1 FROM kombu_message m WHERE (m.payload::json -> 'headers' ->> 'id') = c.task_id)"
)


@dataclass(frozen=True)
class CleanupResult:
    stale_deleted: int
    expired_restored: int
    cancel_marks_pruned: int
    # Queues of consumers that are gone (reply, event, remote-control queues) and the messages deleted
    # with them or past their queue's message TTL (common.broker.fanout).
    dead_queues_dropped: int = 0
    broadcasts_deleted: int = 0


def cleanup_broker_messages(*, visibility_timeout: float | None = None) -> CleanupResult:
    """Delete stale rows, spent cancel marks and dead consumers' queues; make expired in-flight rows ready again."""
    timeout = settings.BROKER_VISIBILITY_TIMEOUT if visibility_timeout is None else visibility_timeout
    if timeout <= 0:
        raise ValueError(f"visibility_timeout must be > 0, got {timeout}")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(DELETE_STALE)
        stale = cursor.rowcount
        cursor.execute(RESTORE_EXPIRED, [timeout])
        restored = cursor.rowcount
        cursor.execute(PRUNE_CANCEL_MARKS, [timeout])
        pruned = cursor.rowcount
        dropped, broadcasts = prune_bindings(cursor)
    return CleanupResult(
        stale_deleted=stale,
        expired_restored=restored,
        cancel_marks_pruned=pruned,
        dead_queues_dropped=dropped,
        broadcasts_deleted=broadcasts,
    )
