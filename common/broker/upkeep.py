"""Keep kombu_message's claims short and its storage small under churn and under a held xmin horizon.

Each message leaves two dead row versions (the claim's UPDATE and the ack's DELETE) and dead index entries.
While any transaction holds back the xmin horizon, VACUUM may remove none of them, and a claim that scans
the ready index from its lowest id walks all of them: claims grow from milliseconds to seconds. So:

- ClaimCursors: a claim starts after the highest id its process claimed from the queue (sql.CLAIM), so it
  never walks what was consumed before; a look-back each pass finds rows that became ready behind the
  cursor (restored, due, or committed after a higher id) and lowers it.
- StorageUpkeep: on a connection of its own (in a thread of its own, so no claim, rescue pass or lease
  renewal waits for it): that look-back; a targeted VACUUM once dead tuples pass BROKER_VACUUM_THRESHOLD
  (backing off while VACUUM can remove nothing, i.e. while an old transaction holds the horizon); and,
  once VACUUM works again, a compaction (VACUUM FULL, under a short lock_timeout) of a table grown far
  beyond its live rows, so it returns to its steady size.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from time import monotonic

import psycopg

from common.broker import sql

logger = logging.getLogger(__name__)

# Longest pause between VACUUM attempts while they remove nothing (an old transaction holds the horizon):
# after it ends, storage recovers within this (plus a pass).
MAX_VACUUM_PAUSE = 30.0
# Bytes budgeted per live row when deciding a compaction: a Celery message row with its index entries is
# 1-3 kB, so a table past 16x that (and past BROKER_COMPACT_ABOVE_MB) is mostly empty space.
LIVE_ROW_BYTES = 16 * 2048
# After a compaction that did not halve the size (the rows are live after all), wait this long to retry.
COMPACT_BACKOFF = 600.0


class ClaimCursors:
    """Per queue, the id this process's claims start after (thread-safe: claims and the look-back share it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._after: dict[int, int] = {}
        # Bumped by each lowering, so a claim that began before it cannot raise the cursor past its row.
        self._generation: dict[int, int] = {}

    def begin(self, queue_id: int) -> tuple[int, int]:
        """(the id to claim after, the generation to hand back to claimed())."""
        with self._lock:
            return self._after.get(queue_id, 0), self._generation.get(queue_id, 0)

    def claimed(self, queue_id: int, highest: int, generation: int) -> None:
        """Advance past `highest` (claimed), unless the cursor was lowered since that claim began."""
        with self._lock:
            if self._generation.get(queue_id, 0) == generation and highest > self._after.get(queue_id, 0):
                self._after[queue_id] = highest

    def look_back(self, queue_id: int, ready_id: int) -> bool:
        """Make the next claim include `ready_id` (a ready row at or below the cursor); True if lowered."""
        with self._lock:
            if ready_id > self._after.get(queue_id, 0):
                return False
            self._after[queue_id] = ready_id - 1
            self._generation[queue_id] = self._generation.get(queue_id, 0) + 1
            return True

    def reset(self) -> None:
        """Claim every queue from its start again (after this process made rows ready itself)."""
        with self._lock:
            for queue_id in self._after:
                self._generation[queue_id] = self._generation.get(queue_id, 0) + 1
            self._after.clear()

    def positions(self) -> tuple[list[int], list[int]]:
        """(queue ids, cursors) of the queues claimed so far."""
        with self._lock:
            return list(self._after), list(self._after.values())


class StorageUpkeep:
    """The look-back, targeted VACUUM and compaction of one consuming process (see the module docstring)."""

    def __init__(
        self,
        *,
        connect: Callable[[], psycopg.Connection],
        cursors: ClaimCursors,
        vacuum_threshold: int,
        compact_above: int,
    ) -> None:
        self._connect = connect  # opens a new connection in autocommit
        self._cursors = cursors
        self._vacuum_threshold = vacuum_threshold
        self._compact_above = compact_above
        self._connection: psycopg.Connection | None = None
        self._pid = os.getpid()
        self._dead_baseline = 0  # dead tuples the last VACUUM left (it could not remove them)
        self._vacuum_pause = 0.0
        self._next_vacuum = 0.0
        self._next_compact = 0.0
        self._compact_wanted = False  # an effective VACUUM found the table bloated; compaction not done yet
        # Seconds the last look-back took: it walks what VACUUM may not remove yet, so under a long-held xmin
        # it grows; passes are spaced to keep it under a tenth of one backend's time.
        self.look_back_seconds = 0.0

    def run(self) -> list[int]:
        """One pass: look back behind the cursors, VACUUM or compact if due; returns the queues looked back on."""
        connection = self._session()
        queues, afters = self._cursors.positions()
        try:
            began = monotonic()
            row = connection.execute(sql.LOOK_BACK, {"queues": queues, "afters": afters}).fetchone()
            self.look_back_seconds = monotonic() - began
            assert row is not None
            lowest, dead = row
            lowered = [
                q for q, ready in zip(queues, lowest, strict=True) if ready and self._cursors.look_back(q, ready)
            ]
            self._dead_baseline = min(self._dead_baseline, dead)  # autovacuum ran meanwhile
            if self._vacuum_due(dead):
                self._locked(lambda: self._vacuum(connection, dead))
            elif self._compact_wanted and monotonic() >= self._next_compact:
                self._locked(lambda: self._compact(connection))
        except psycopg.OperationalError:
            self.close()
            raise
        return lowered

    def _vacuum_due(self, dead: int) -> bool:
        """New dead tuples past the threshold since the last VACUUM; or, while the last one removed nothing,
        its backoff is over (the statistics' count is no guide then: autovacuum and ANALYZE rewrite it)."""
        if not self._vacuum_threshold or monotonic() < self._next_vacuum:
            return False
        return self._vacuum_pause > 0 or dead - self._dead_baseline >= self._vacuum_threshold

    def _locked(self, action: Callable[[], None]) -> None:
        """Run `action` under the upkeep's advisory lock (one process at a time), or skip it if another has it."""
        connection = self._session()
        lock = connection.execute(sql.TRY_UPKEEP_LOCK).fetchone()
        if not lock or not lock[0]:
            return
        try:
            action()
        finally:
            connection.execute(sql.UPKEEP_UNLOCK)

    def _vacuum(self, connection: psycopg.Connection, dead: int) -> None:
        """VACUUM; back off while it removes nothing (an old transaction holds the horizon); compact once it works."""
        try:
            connection.execute(sql.VACUUM)
        except psycopg.errors.LockNotAvailable:
            return  # autovacuum (or another VACUUM) is at it: try again next pass
        left, live, table, indexes = self._storage(connection)
        effective = left < max(self._vacuum_threshold, dead // 2)
        self._dead_baseline = left
        self._vacuum_pause = 0.0 if effective else min(MAX_VACUUM_PAUSE, max(1.0, 2 * self._vacuum_pause))
        self._next_vacuum = monotonic() + self._vacuum_pause
        logger.info(
            "broker.vacuumed",
            extra={"event": "broker.vacuumed", "dead_before": dead, "dead_left": left, "bytes": table + indexes},
        )
        if effective and self._compact_above and self._bloated(live, table + indexes):
            self._compact_wanted = True
            if monotonic() >= self._next_compact:
                self._compact(connection)

    def _bloated(self, live: int, size: int) -> bool:
        return size > max(self._compact_above, LIVE_ROW_BYTES * live)

    def _compact(self, connection: psycopg.Connection) -> None:
        """VACUUM FULL, unless the horizon is held again (it would copy every dead row, under its lock); if the
        lock is busy, retry next pass; if it did not halve the size, not for a while."""
        _, live, table, indexes = self._storage(connection)
        before = table + indexes
        if not self._bloated(live, before):
            self._compact_wanted = False
            return
        held = connection.execute(sql.HORIZON_HELD).fetchone()
        if held and held[0]:
            return
        try:
            connection.execute(sql.COMPACT)
        except psycopg.errors.LockNotAvailable:
            return  # busy right now (the lock_timeout gave up): the next pass tries again
        self._compact_wanted = False
        _, _, table, indexes = self._storage(connection)
        if table + indexes > before // 2:
            self._next_compact = monotonic() + COMPACT_BACKOFF  # its rows are live: not bloat
        logger.info(
            "broker.compacted",
            extra={"event": "broker.compacted", "bytes_before": before, "bytes_after": table + indexes},
        )

    @staticmethod
    def _storage(connection: psycopg.Connection) -> tuple[int, int, int, int]:
        row = connection.execute(sql.STORAGE).fetchone()
        assert row is not None
        return row

    def _session(self) -> psycopg.Connection:
        if os.getpid() != self._pid:  # a forked child: the parent's connection is not ours to use or close
            self._connection, self._pid = None, os.getpid()
        if self._connection is None or self._connection.closed:
            connection = self._connect()  # in autocommit: VACUUM runs outside a transaction block
            connection.execute(sql.UPKEEP_SESSION)
            self._connection = connection
        return self._connection

    def close(self) -> None:
        """Close this upkeep's connection (the next run opens a new one)."""
        connection, self._connection = self._connection, None
        if connection is not None and os.getpid() == self._pid:
            with contextlib.suppress(psycopg.Error):
                connection.close()
