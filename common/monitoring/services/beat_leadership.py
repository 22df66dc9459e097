"""Exactly one dispatching beat: a PostgreSQL session-level advisory lock held on a dedicated connection.

Every beat started with this project's Celery app (whatever --scheduler it was
given) is guarded: its scheduler's tick() only runs while this process holds the
lock; otherwise it idles as a standby and retries every BEAT_TAKEOVER_TIMEOUT / 5.

- The lock lives as long as the leader's database session. A leader killed with
  -9 closes its socket and PostgreSQL frees the lock at once; a leader whose host
  vanishes is dropped by the server's TCP keepalives, which we scale to the
  takeover timeout.
- Each slot's last_run_at is written *before* the message is published, by an
  UPDATE on the lock connection that only matches while that session holds the
  lock. So a beat that lost its lock cannot dispatch, and a new leader (which
  reloads the schedule from the database on takeover) never dispatches a slot the
  old one already sent. A crash between that write and the publish loses that one
  slot rather than doubling it: at most once per slot.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from django.conf import settings
from django.db import Error as DjangoDatabaseError
from django.db import close_old_connections
from django.db import connection as django_connection

from common.database_urls import database_url_for

logger = logging.getLogger(__name__)

# Two 32-bit keys ("door", "beat"): the two-key form shows up in pg_locks as classid/objid, objsubid = 2.
LOCK_KEYS = (0x646F6F72, 0x62656174)
_HOLDS_LOCK = (
    "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s "
    "AND objsubid = 2 AND pid = pg_backend_pid() AND granted)"
)

# Fenced: matches only while this session holds the lock. (_HOLDS_LOCK is a constant, not input.)
# A one-off task is disabled in the same statement as its only slot is written: django-celery-beat
# would only do it when it next checks the entry, which for a clocked schedule is never.
_PERSIST_SLOT = (
    "UPDATE django_celery_beat_periodictask SET last_run_at = %s, total_run_count = %s, "  # noqa: S608
    f"enabled = enabled AND NOT one_off WHERE id = %s AND {_HOLDS_LOCK}"
)


class LeadershipLost(Exception):
    """The lock session is gone or no longer holds the lock: stop dispatching."""


class SlotGone(Exception):
    """The periodic task row of a due slot was deleted (in the admin) while this beat still leads."""


def _one(cursor: psycopg.Cursor) -> Any:
    """The first column of the statement's single row."""
    row = cursor.fetchone()
    if row is None:
        raise psycopg.DataError("expected one row, got none")
    return row[0]


class BeatLeadership:
    """The lock connection of one beat process, and the row that shows it on the status screen."""

    def __init__(self, *, database_url: str, takeover_timeout: int) -> None:
        self.database_url = database_url
        self.takeover_timeout = takeover_timeout
        self.poll_interval = max(1.0, takeover_timeout / 5)
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.conn: psycopg.Connection | None = None
        self.row_id: int | None = None
        self.is_leader = False
        # After losing the lock, wait this long (monotonic) before competing again: a standby that
        # polls every poll_interval gets the lock first, rather than the beat whose session just died.
        self.yield_until = 0.0

    # --- the lock connection ---------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        t = self.takeover_timeout
        conn = psycopg.connect(
            self.database_url,
            autocommit=True,
            application_name="doorito-beat-leadership",
            connect_timeout=max(2, t // 5),
            # Client side: notice a dead server or network quickly instead of hanging a tick.
            keepalives=1,
            keepalives_idle=max(1, t // 3),
            keepalives_interval=max(1, t // 6),
            keepalives_count=2,
            tcp_user_timeout=max(1000, t * 500),
        )
        # Server side: drop (and so unlock) the session of a leader whose host vanished within ~2/3 t.
        conn.execute(f"SET tcp_keepalives_idle = {max(1, t // 3)}")
        conn.execute(f"SET tcp_keepalives_interval = {max(1, t // 6)}")
        conn.execute("SET tcp_keepalives_count = 2")
        conn.execute(f"SET statement_timeout = {max(1000, t * 200)}")
        return conn

    def _close(self) -> None:
        if self.conn is not None:
            # Closing the session releases the lock; a broken connection is what we are discarding anyway.
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None

    def _ensure_row(self, conn: psycopg.Connection) -> None:
        if self.row_id is None:
            self.row_id = _one(
                conn.execute(
                    "INSERT INTO monitoring_beatinstance (hostname, pid, started_at, last_tick, is_leader) "
                    "VALUES (%s, %s, now(), now(), false) RETURNING id",
                    [self.hostname, self.pid],
                )
            )
            conn.execute(
                "DELETE FROM monitoring_beatinstance WHERE last_tick < now() - make_interval(secs => %s)",
                [settings.MONITORING_RETENTION],
            )

    def check(self) -> bool:
        """Connect if needed, try to take the lock if we lack it, record the tick; True while we lead. Never raises."""
        try:
            if self.conn is None or self.conn.closed:
                self.conn = self._connect()
                self.is_leader = False
            conn = self.conn
            self._ensure_row(conn)
            if not self.is_leader and time.monotonic() >= self.yield_until:
                self.is_leader = _one(conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEYS))
            held = _one(conn.execute(f"SELECT {_HOLDS_LOCK}", LOCK_KEYS))
            conn.execute(
                "UPDATE monitoring_beatinstance SET last_tick = now(), stopped_at = NULL, is_leader = %s, "
                "leader_since = CASE WHEN %s THEN COALESCE(CASE WHEN is_leader THEN leader_since END, now()) END "
                "WHERE id = %s",
                [held, held, self.row_id],
            )
            if self.is_leader and not held:
                self.yield_until = time.monotonic() + 2 * self.poll_interval
            self.is_leader = bool(held)
        except psycopg.Error as exc:
            if self.is_leader or self.conn is not None:
                logger.warning(
                    "beat lock connection failed, not dispatching: %s",
                    str(exc).strip(),
                    extra={"event": "beat.lock_connection_failed", "error": str(exc).strip()},
                )
            if self.is_leader:
                self.yield_until = time.monotonic() + 2 * self.poll_interval
            self.is_leader = False
            self._close()
        return self.is_leader

    def persist_slot(self, *, task_pk: int, last_run_at: datetime | None, total_run_count: int) -> None:
        """Write a slot's last_run_at, only while this session holds the lock; raise LeadershipLost otherwise."""
        if self.conn is None:
            raise LeadershipLost("no lock connection")
        try:
            cursor = self.conn.execute(
                _PERSIST_SLOT,
                [last_run_at, total_run_count, task_pk, *LOCK_KEYS],
            )
            if cursor.rowcount == 1:
                return
            still_leader = _one(self.conn.execute(f"SELECT {_HOLDS_LOCK}", LOCK_KEYS))
        except psycopg.Error as exc:
            raise LeadershipLost(str(exc).strip()) from exc
        if not still_leader:
            raise LeadershipLost("lock no longer held")
        # Still leader, so the row itself is gone (deleted in the admin): skip the slot, keep leading.
        raise SlotGone(f"periodic task {task_pk} no longer exists")

    def resign(self, *, stopping: bool = False) -> None:
        """Give up the lock (closing its session); when stopping, also mark this beat stopped."""
        try:
            if stopping and self.conn is not None and not self.conn.closed and self.row_id is not None:
                self.conn.execute(
                    "UPDATE monitoring_beatinstance SET is_leader = false, stopped_at = now() WHERE id = %s",
                    [self.row_id],
                )
        except psycopg.Error:
            pass
        if self.is_leader:
            self.yield_until = time.monotonic() + 2 * self.poll_interval
        self.is_leader = False
        self._close()


def install_beat_leadership(*, service: Any, on_leadership: Callable[[], None] | None = None) -> BeatLeadership:
    """Make `service` dispatch only while it holds the beat lock; on_leadership runs on gaining it."""
    from django_celery_beat.schedulers import DatabaseScheduler

    scheduler = service.scheduler
    leadership = BeatLeadership(
        database_url=database_url_for(django_connection.settings_dict),
        takeover_timeout=settings.BEAT_TAKEOVER_TIMEOUT,
    )
    original_tick, original_reserve = scheduler.tick, scheduler.reserve
    is_database_scheduler = isinstance(scheduler, DatabaseScheduler)

    def forget_schedule() -> None:
        # Whatever this process believed about last runs is stale: the database is the truth.
        if is_database_scheduler:
            scheduler._dirty.clear()
            scheduler._initial_read = True
        scheduler._heap = None

    def reserve(entry: Any) -> Any:
        new_entry = original_reserve(entry)
        model = getattr(new_entry, "model", None)
        if model is not None:
            try:
                leadership.persist_slot(
                    task_pk=model.pk, last_run_at=model.last_run_at, total_run_count=model.total_run_count
                )
            except SlotGone:
                forget_schedule()
                raise
            if model.one_off:
                model.enabled = False  # as _PERSIST_SLOT just wrote
            if is_database_scheduler:
                # Already written, fenced by the lock. Dropping it from the dirty set keeps a deposed
                # leader's periodic sync() from writing an older last_run_at over the new leader's.
                scheduler._dirty.discard(new_entry.name)
                # django-celery-beat leaves the old entry (with the old last_run_at) in its schedule dict. If
                # the heap is rebuilt from that dict without a reload (its _heap_invalidated flag, set when a
                # change is seen mid-tick, as after every takeover), the slot just sent is due again and
                # goes out twice. Advance the dict's entry too, so any rebuild sees this slot as sent.
                held = (scheduler._schedule or {}).get(new_entry.name)
                if held is not None:
                    held.last_run_at = held.model.last_run_at = new_entry.last_run_at
                    held.total_run_count = held.model.total_run_count = new_entry.total_run_count
                    if model.one_off:
                        held.model.enabled = False
        return new_entry

    def tick(*args: Any, **kwargs: Any) -> float:
        was_leader = leadership.is_leader
        if not leadership.check():
            if was_leader:
                logger.warning("beat lost leadership; standing by", extra={"event": "beat.leadership_lost"})
                forget_schedule()
            return leadership.poll_interval
        if not was_leader:
            logger.info(
                "beat is leader (pid %s); dispatching",
                leadership.pid,
                extra={"event": "beat.leadership_acquired", "pid": leadership.pid},
            )
            if on_leadership is not None:
                on_leadership()
            forget_schedule()
        try:
            interval = original_tick(*args, **kwargs)
        except SlotGone:
            return 0
        except (LeadershipLost, DjangoDatabaseError) as exc:
            logger.warning(
                "beat stopped dispatching: %s", exc, extra={"event": "beat.leadership_lost", "error": str(exc)}
            )
            leadership.resign()
            forget_schedule()
            close_old_connections()
            return leadership.poll_interval
        # Re-check the lock at least every poll interval, even when nothing is due for longer.
        return min(interval, leadership.poll_interval)

    scheduler.tick = tick
    scheduler.reserve = reserve
    atexit.register(leadership.resign, stopping=True)
    logger.info(
        "beat leadership guard installed (takeover within %ss)",
        settings.BEAT_TAKEOVER_TIMEOUT,
        extra={"event": "beat.standby", "pid": leadership.pid},
    )
    return leadership
