"""Maintenance of kombu_message: drop what the stock transport left, revive what dead consumers held."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from common.broker.transport import RESTORE_EXPIRED

# The stock transport marks a consumed row invisible (version >= 1) and never touches it again.
DELETE_STALE = "DELETE FROM kombu_message WHERE NOT visible AND version >= 0"


@dataclass(frozen=True)
class CleanupResult:
    stale_deleted: int
    expired_restored: int


def cleanup_broker_messages(*, visibility_timeout: float | None = None) -> CleanupResult:
    """Delete rows the stock transport consumed and make expired in-flight rows deliverable again, atomically."""
    timeout = settings.BROKER_VISIBILITY_TIMEOUT if visibility_timeout is None else visibility_timeout
    if timeout <= 0:
        raise ValueError(f"visibility_timeout must be > 0, got {timeout}")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(DELETE_STALE)
        stale = cursor.rowcount
        cursor.execute(RESTORE_EXPIRED, [timeout])
        restored = cursor.rowcount
    return CleanupResult(stale_deleted=stale, expired_restored=restored)
