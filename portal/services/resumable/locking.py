"""One request at a time per upload: a PostgreSQL session advisory lock, held while a PATCH streams.

A session lock, not a row lock in a transaction: the PATCH commits its progress (offset) several times while it
holds the lock, and no transaction stays open while bytes arrive. The lock goes with the database session, so a
worker killed mid-PATCH (kill -9, OOM) releases it when PostgreSQL sees the connection close.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from django.db import DatabaseError, connection

# pg_try_advisory_lock has no ORM equivalent: it is a function call, not a row.
TRY_LOCK_SQL = "SELECT pg_try_advisory_lock(%s)"
UNLOCK_SQL = "SELECT pg_advisory_unlock(%s)"


def _lock_key(upload_id: uuid.UUID) -> int:
    # 64 bits of a random UUID: collisions between live uploads are as unlikely as UUID collisions.
    return int.from_bytes(upload_id.bytes[:8], "big", signed=True)


@contextlib.contextmanager
def upload_lock(*, upload_id: uuid.UUID) -> Iterator[bool]:
    """Try to take the upload's lock without waiting; yields whether it is held, releases it on exit."""
    key = _lock_key(upload_id)
    with connection.cursor() as cursor:
        cursor.execute(TRY_LOCK_SQL, [key])
        held = bool(cursor.fetchone()[0])
    try:
        yield held
    finally:
        if held:
            # A broken connection has lost the lock with its session already.
            with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
                cursor.execute(UNLOCK_SQL, [key])
