"""Doorito's PostgreSQL transport for kombu: kombu's SQLAlchemy transport, hardened.

Same tables (kombu_queue, kombu_message) and URL form (sqla+postgresql+psycopg://)
as the stock transport, so stock producers and consumers interoperate. What
changes is how rows move (the statements and row states are in common.broker.sql):

- publish: one INSERT with a cached queue id, which also returns whether a consumer of the queue may be
  asleep (kombu_queue.wake_wanted_until, armed by consumers before they sleep); only then does the
  process's waker thread NOTIFY listeners after it (common.broker.waker), and that wake-up clears the flag:
  the consumers it wakes arm it again before they sleep again, so the publishes in between send none. Busy
  consumers claim again without a wake-up, so their producers send none. The insert trigger notifies for
  other producers;
- claim: one UPDATE ... FOR UPDATE SKIP LOCKED ... RETURNING round trip, which
  marks rows in flight and records the claiming database backend;
- ack: DELETE the row, so the table holds only ready and in-flight messages;
- crash: every consuming process runs a rescue pass each second; rows whose
  claiming backend no longer exists (the process died, so PostgreSQL closed its
  session) are ready again within seconds. Rows whose lease (timestamp) is older
  than the visibility timeout come back too: the fallback for what no signal reveals;
- broker_cancel: pending marks reach the worker in the claim and the rescue pass
  (see common.broker.cancel_check); no task pays a query for them.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import logging
import os
import select
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from json import dumps, loads
from queue import Empty
from time import monotonic
from typing import Any, cast

import psycopg
from kombu.transport import sqlalchemy as stock
from kombu.transport import virtual
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.orm import sessionmaker

from common.broker import fanout, sql
from common.broker.fanout import FanoutChannel
from common.broker.options import TransportOptions
from common.broker.upkeep import ClaimCursors, StorageUpkeep
from common.broker.waker import process_waker

logger = logging.getLogger(__name__)

CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)
# An ETA closer than this is delivered at once (Celery waits out the rest): not worth a scheduled row.
SCHEDULE_MARGIN = datetime.timedelta(seconds=0.5)
# A consuming process arms its sleeping queues' wake_wanted_until for twice its polling interval plus this
# (the hold), and arms again once its flag would not cover one more polling interval (its longest sleep):
# one write per queue per polling interval plus half this at most, and the flag always covers the sleep.
WAKE_HOLD_MARGIN = 1.0
# After arming a queue whose flag was unset, the consumer claims it at once and once more after this pause,
# then sleeps: see Transport._arm_sleeping_queues for the race this closes.
RECHECK_AFTER_ARM = 0.05
# In Celery's event loop, a claim waits at most this long for claim_batch prefetch slots to be free (see
# Channel._gathering_room); and one tick delivers at most this many messages before the hub serves the pool.
CLAIM_GATHER_SECONDS = 0.005
MAX_DELIVERIES_PER_TICK = 64

# Set by common.broker.services.transactional: publish through this Django cursor instead.
transaction_cursor: contextvars.ContextVar = contextvars.ContextVar("doorito_broker_transaction_cursor", default=None)
# Incremented by each publish made through transaction_cursor, so the caller can verify it happened.
transaction_publishes: contextvars.ContextVar = contextvars.ContextVar("doorito_broker_transaction_publishes")


# Called (in the consuming process) with the task ids of pending broker_cancel marks, before any of those
# tasks' messages is delivered: common.broker.cancel_check registers Celery's revoke here.
cancel_listeners: list[Callable[[set[str]], None]] = []
# Called with (seconds the claim statement took, rows claimed) after each claim, if any are registered: the
# broker benchmark's pressure mode times claims this way (no cost when the list is empty).
claim_observers: list[Callable[[float, int], None]] = []

# One engine per (process, URL): a forked child never touches its parent's pooled sockets.
_engines: dict[tuple[int, str], Engine] = {}
_engines_lock = threading.Lock()
# Queue ids never change once created, so a publish needs no SELECT.
_queue_ids: dict[tuple[str, str], int] = {}


def engine_for(url: str, engine_options: dict) -> Engine:
    """The current process's engine for `url` (created on first use; never runs create_all)."""
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = create_engine(url, **engine_options)
    return engine


def dispose_engines(*, url: str | None = None) -> None:
    """Close the pooled connections this process opened (to `url`, or all), e.g. before dropping the database."""
    pid = os.getpid()
    with _engines_lock:
        for (owner, engine_url), engine in list(_engines.items()):
            if url is not None and engine_url != url:
                continue
            if owner == pid:
                engine.dispose()
            del _engines[(owner, engine_url)]


# Connections, engines and listeners a forked child inherited. They are kept referenced for the
# child's whole life: if they were garbage-collected, SQLAlchemy could reset or terminate them,
# which writes to the socket the parent is still using.
_inherited: list = []


def _forget_engines_after_fork() -> None:
    # The parent's sockets must stay untouched: the child starts new engines and keeps the old ones alive, unused.
    _inherited.extend(_engines.values())
    _engines.clear()


os.register_at_fork(after_in_child=_forget_engines_after_fork)


# Every channel of this process, closed ones included: the rescue pass re-owns the rows of the open ones and
# retries the acks that failed with the connection on any of them (a closed channel still takes late acks).
_channels: weakref.WeakSet[Channel] = weakref.WeakSet()


def _unlock_channels_after_fork() -> None:
    # The waker and keeper threads run statements under a channel's lock; a fork in that moment would hand the
    # child the lock held by a thread it does not have. The child has no other thread yet: fresh locks are safe.
    for channel in list(_channels):
        channel._db_lock = threading.RLock()


os.register_at_fork(after_in_child=_unlock_channels_after_fork)


def _announce_cancelled(task_ids: set[str]) -> None:
    for listener in list(cancel_listeners):
        try:
            listener(task_ids)
        except Exception:  # a listener's bug must not stop consuming
            logger.exception("broker.cancel_listener_failed", extra={"event": "broker.cancel_listener_failed"})


class QoS(virtual.QoS):
    """Unacked messages stay rows in the table: restoring is an UPDATE, never a re-publish or a dump file."""

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        # Channel.basic_reject already requeued or deleted the row.
        self._quick_ack(delivery_tag)

    def restore_unacked(self) -> list[Any]:
        self._flush()
        delivered = self._delivered
        if delivered is None:
            return []
        tags = list(delivered)
        delivered.clear()
        cast(DooritoChannel, self.channel)._restore_tags(tags)
        return []

    def restore_unacked_once(self, stderr: Any = None) -> None:
        self._on_collect.cancel()
        self._flush()
        state = self._delivered
        if state is None or getattr(state, "restored", False):
            return
        if not self.restore_at_shutdown or not self.channel.do_restore:
            return
        try:
            self.restore_unacked()
        finally:
            state.restored = True


class Channel(FanoutChannel):
    """A channel with its own autocommit connection from the process's engine pool (fanout: common.broker.fanout)."""

    QoS = QoS

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        self.options = TransportOptions.parse(connection.client.transport_options)
        # Kept here: kombu unsets channel.connection at close, and a late ack still needs the database.
        self._url = connection.client.hostname
        self._pid = os.getpid()
        self._dbapi: Any = None
        # (pid, backend_start) of this channel's database session: recorded with each claim.
        self._backend: tuple[int, datetime.datetime] | None = None
        self._db_lock = threading.RLock()
        self._row_ids: dict[str, int] = {}  # delivery tag -> kombu_message.id this process holds (claimed)
        self._released: dict[str, int] = {}  # restored rows a late ack still deletes (the task ran after all)
        # Acked rows not yet deleted, in two hands (never both, so two sessions never wait on each other's DELETE):
        # - due: the consuming thread's next claim deletes them in its round trip, or its next flush (before it
        #   delivers or waits); each rescue pass hands those still here over to
        # - pending: the keeper's rescue pass deletes them (and those whose DELETE failed with the connection).
        self._acks_due: list[int] = []
        self._pending_acks: set[int] = set()
        self._acks_lock = threading.Lock()
        self._buffers: dict[str, deque] = {}  # queue -> claimed rows not yet delivered
        self._gathering_since: float | None = None  # monotonic time a claim was first held back (_gathering_room)
        super().__init__(connection, **kwargs)
        _channels.add(self)

    # --- connection handling -------------------------------------------------
    def _engine_from_config(self) -> Engine:
        return engine_for(self._url, self.options.engine_options)

    def _open(self) -> tuple[Engine, Any]:
        # The stock _open also runs metadata.create_all; our schema comes from a Django migration.
        engine = self._engine_from_config()
        return engine, sessionmaker(bind=engine)

    def _connection(self) -> psycopg.Connection:
        if os.getpid() != self._pid:
            self._forget_parent_state()
        if self._dbapi is None:
            fairy = self._engine_from_config().raw_connection()
            driver = _driver_connection(fairy)
            driver.autocommit = True
            try:
                row = driver.execute(sql.SESSION_SETUP).fetchone()
                if row is None:
                    raise psycopg.DataError("the session setup statement returned no row")
                pid, started, _ = row
                self._rebind(driver, (pid, started))
            except Exception:
                fairy.invalidate()
                raise
            self._dbapi, self._backend = fairy, (pid, started)
        return self._dbapi.driver_connection

    def _forget_parent_state(self) -> None:
        """In a forked child: drop the parent's connection and rows unused (the parent still owns both)."""
        if self._dbapi is not None:
            _inherited.append(self._dbapi)
        self._dbapi = self._backend = None
        self._row_ids.clear()
        self._released.clear()
        self._pending_acks.clear()
        self._acks_due = []
        self._acks_lock = threading.Lock()  # a fork while another thread held it would leave it held here
        self._buffers.clear()
        self._forget_shared_state()
        self._pid = os.getpid()

    def _drop_connection(self, *, broken: bool) -> None:
        fairy, self._dbapi = self._dbapi, None
        if fairy is None or os.getpid() != self._pid:
            return
        with contextlib.suppress(Exception):
            if broken:
                fairy.invalidate()
            else:
                fairy.driver_connection.autocommit = False
                fairy.close()

    def _run(self, statement: str, params: Any = (), *, fetch: bool = False, retry: bool = True) -> Any:
        """Run one autocommit statement; after a lost connection, retry once on a fresh one if `retry`."""
        for attempt in (1, 2):
            with self._db_lock:
                try:
                    cursor = self._connection().execute(statement, params)
                    return cursor.fetchall() if fetch else cursor.rowcount
                except CONNECTION_ERRORS:
                    self._drop_connection(broken=True)
                    if attempt == 2 or not retry:
                        raise
        raise AssertionError("unreachable")

    def _run_as_claimer(self, statement: str, params: dict[str, Any]) -> list[tuple]:
        """Run `statement` with this session's identity as %(pid)s/%(started)s; retried once on a new session."""
        for attempt in (1, 2):
            with self._db_lock:
                try:
                    connection = self._connection()
                    assert self._backend is not None
                    pid, started = self._backend
                    return connection.execute(statement, {**params, "pid": pid, "started": started}).fetchall()
                except CONNECTION_ERRORS:
                    self._drop_connection(broken=True)
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    # --- queues ----------------------------------------------------------------
    def _queue_id(self, queue: str) -> int:
        key = (self._url, queue)
        queue_id = _queue_ids.get(key)
        if queue_id is None:
            for _ in range(3):  # a concurrent creator may win the ON CONFLICT race; then read its row
                rows = self._run(sql.QUEUE_ID, {"name": queue}, fetch=True)
                if rows:
                    queue_id = _queue_ids[key] = rows[0][0]
                    break
            else:
                raise RuntimeError(f"could not create or find broker queue {queue!r}")
        return queue_id

    def _forget_queue_id(self, queue: str) -> None:
        _queue_ids.pop((self._url, queue), None)

    def _get_or_create(self, queue: str) -> int:
        return self._queue_id(queue)

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        self._queue_id(queue)

    def _size(self, queue: str) -> int:
        return self._run(sql.QUEUE_SIZE, (self._queue_id(queue),), fetch=True)[0][0]

    def _purge(self, queue: str) -> int:
        return self._run(sql.PURGE_QUEUE, (self._queue_id(queue),))

    # --- publish -------------------------------------------------------------------
    def _put(self, queue: str, message: dict, **kwargs: Any) -> None:
        payload = dumps(message)
        due = scheduled_for(message)
        # A cached id whose row is gone (a pruned fanout queue, declared again under a new id by a restarted
        # consumer) inserts nothing: forget it and publish once more under the queue's current id.
        for _attempt in (1, 2):
            if self._insert(queue, payload, due):
                return
            self._forget_queue_id(queue)
        raise RuntimeError(f"broker queue {queue!r} was deleted twice while a message was published to it")

    def _insert(self, queue: str, payload: str, due: datetime.datetime | None) -> bool:
        """Insert `payload` into `queue` (ready, or scheduled for `due`); False if the queue's row is gone."""
        queue_id = self._queue_id(queue)
        cursor = transaction_cursor.get()
        if cursor is not None:
            if due is None:
                cursor.execute(sql.INSERT_MESSAGE_IN_TRANSACTION, {"payload": payload, "queue": queue_id})
            else:
                cursor.execute(sql.INSERT_SCHEDULED, (due, payload, queue_id))
            if not cursor.rowcount:
                return False
            transaction_publishes.set(transaction_publishes.get(0) + 1)
        elif due is not None:  # not ready yet: nobody to wake
            # An INSERT whose reply was lost may have committed: never retry it blindly.
            return bool(self._run(sql.INSERT_SCHEDULED, (due, payload, queue_id), retry=False))
        else:
            rows = self._run(sql.INSERT_MESSAGE, {"payload": payload, "queue": queue_id}, fetch=True, retry=False)
            if not rows:
                return False
            if rows[0][0]:  # this publish disarmed a consumer's flag: it may be asleep on LISTEN
                self._wake_consumers(queue_id)
        return True

    def _wake_consumers(self, queue_id: int) -> None:
        """Have this process's waker thread notify consumers of a committed publish (the producer never waits)."""
        process_waker().wake(queue_id, self._send_wake)

    def _send_wake(self, queue_ids: list[int]) -> None:
        """The waker thread's NOTIFYs, on this channel's connection (under its lock, so it adds no connection)."""
        if self.closed or os.getpid() != self._pid:
            raise psycopg.InterfaceError("the publishing channel is closed")  # consumers poll for it instead
        self._run(sql.WAKE_QUEUES, (queue_ids,))

    # --- consume -------------------------------------------------------------------
    def consumed_queue_ids(self) -> set[int]:
        """Ids of the queues this open channel consumes, among those whose id this process knows."""
        if self.closed or os.getpid() != self._pid:
            return set()
        ids = (_queue_ids.get((self._url, queue)) for queue in list(self._active_queues))
        return {queue_id for queue_id in ids if queue_id is not None}

    def _get(self, queue: str) -> dict:
        buffer = self._buffers.setdefault(queue, deque())
        if not buffer:
            queue_id = self._queue_id(queue)
            transport = cast("Transport", self.connection)
            if queue_id in transport.known_empty:
                raise Empty()
            no_ack = queue in self._no_ack_queues
            if not no_ack and self._gathering_room():
                raise Empty()
            news = transport.news
            rows = self._take(queue_id, self.options.claim_batch) if no_ack else self._claim(queue_id)
            if not rows:
                if transport.news == news:  # else another thread made rows ready while this claim ran
                    transport.known_empty.add(queue_id)
                raise Empty()
            buffer.extend(rows)
        elif cast("Transport", self.connection)._hub is None:
            # The delivery may block (Celery's blocking pool waits for a free child): the acks gathered go out first.
            self.flush_acks()
        row_id, payload = buffer.popleft()
        message = loads(payload)
        if queue not in self._no_ack_queues:  # a taken row is gone already: nothing to ack
            self._row_ids[message["properties"]["delivery_tag"]] = row_id
        return message

    def _claim(self, queue_id: int) -> list[tuple[int, str]]:
        """Claim a batch (oldest first, after the claim cursor); tell the cancel listeners about marked tasks
        before any is delivered."""
        cursors = cast("Transport", self.connection).cursors
        after, generation = cursors.begin(queue_id)
        acks = self._take_acks()
        began = monotonic() if claim_observers else 0.0
        try:
            rows = self._run_as_claimer(
                sql.CLAIM, {"queue": queue_id, "limit": self._claim_size(), "after": after, "acks": acks}
            )
        except Exception:
            self._defer_acks(acks)  # still held by us: the rescue pass deletes them after reconnecting
            raise
        for observer in claim_observers:
            observer(monotonic() - began, len(rows))
        if rows:
            cursors.claimed(queue_id, max(row_id for row_id, _, _ in rows), generation)
        cancelled = {loads(payload)["headers"]["id"] for _, payload, marked in rows if marked}
        if cancelled:
            _announce_cancelled(cancelled)
        return sorted((row_id, payload) for row_id, payload, _ in rows)

    def claimer_identity(self) -> tuple[int, datetime.datetime]:
        """(pid, backend_start) of the session this channel claims on (connecting first if it has none)."""
        with self._db_lock:
            self._connection()
            assert self._backend is not None
            return self._backend

    def _gathering_room(self) -> bool:
        """In the event loop: whether to wait a little before claiming, for claim_batch prefetch slots to be free.

        Under load, each ack frees one slot, and claiming at once would spend a round trip per task; the
        worker still has prefetched work meanwhile. The wait is bounded (CLAIM_GATHER_SECONDS), so a worker
        whose tasks are long (or whose prefetch window is small) never idles for it.
        """
        transport = cast("Transport", self.connection)
        if transport._hub is None or self._qos is None or not self.qos.prefetch_count:
            return False
        room = self.qos.can_consume_max_estimate() or 0
        if room >= min(self.options.claim_batch, self.qos.prefetch_count):
            self._gathering_since = None
            return False
        now = monotonic()
        if self._gathering_since is None:
            self._gathering_since = now
            transport.tick_after(CLAIM_GATHER_SECONDS)
        if now - self._gathering_since < CLAIM_GATHER_SECONDS:
            return True
        self._gathering_since = None
        return False

    def gathering(self) -> bool:
        """Whether a claim is being held back for more free slots (it will carry the acks gathered meanwhile)."""
        return self._gathering_since is not None

    def _claim_size(self) -> int:
        room = self.qos.can_consume_max_estimate() if self._qos is not None else None
        return max(1, min(self.options.claim_batch, room or self.options.claim_batch))

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        # Celery acks from its pool's result thread while the main thread consumes: the ack only joins the
        # batch (the row stays held, so nobody runs it again) and wakes the consuming thread, whose next round
        # trip deletes it. A worker killed in between runs the task again, as one killed just before its ack.
        row_id = self._row_ids.get(delivery_tag, self._released.get(delivery_tag))
        if row_id is not None:
            if self.closed:
                # A late ack after a reconnect still deletes the row (no second run), then lets go of the connection.
                self._delete_or_defer([row_id])
                self._drop_connection(broken=False)
            else:
                with self._acks_lock:
                    self._acks_due.append(row_id)
            self._row_ids.pop(delivery_tag, None)
            self._released.pop(delivery_tag, None)
        super().basic_ack(delivery_tag, multiple=multiple)
        self._wake_consumer()

    def _take_acks(self) -> list[int]:
        with self._acks_lock:
            acks, self._acks_due = self._acks_due, []
        return acks

    def _defer_acks(self, row_ids: list[int]) -> None:
        with self._acks_lock:
            self._pending_acks.update(row_ids)

    def flush_acks(self) -> None:
        """Delete the rows acked since the last round trip (deferred to the rescue pass if the database is away)."""
        if self._acks_due and os.getpid() == self._pid:
            self._delete_or_defer(self._take_acks())

    def _delete_or_defer(self, row_ids: list[int]) -> None:
        """Delete acked rows; if the database cannot be reached, the rescue pass deletes them after reconnecting."""
        try:
            self._run(sql.DELETE_ROWS, (row_ids,))
        except CONNECTION_ERRORS as exc:
            # Still held (re-owned by the rescue pass), so nobody runs them again meanwhile.
            self._defer_acks(row_ids)
            logger.warning(
                "broker.ack_deferred", extra={"event": "broker.ack_deferred", "rows": row_ids, "error": str(exc)}
            )

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        row_id = self._row_ids.pop(delivery_tag, self._released.pop(delivery_tag, None))
        if row_id is not None:
            if not requeue:
                self._delete_or_defer([row_id])
            else:
                # If the database cannot be reached, the row is no longer held: the rescue pass requeues it.
                self._restore_ids([row_id])
        super().basic_reject(delivery_tag, requeue=requeue)
        self._wake_consumer()

    def basic_cancel(self, consumer_tag: str) -> None:
        queue = self._tag_to_queue.get(consumer_tag)
        super().basic_cancel(consumer_tag)
        if queue is not None:
            self._restore_buffer(queue)

    def _wake_consumer(self) -> None:
        transport = cast("Transport | None", self.connection)
        if transport is not None:
            transport.wake()

    def in_flight_ids(self) -> list[int]:
        """Rows this open channel holds: delivered but unacked, claimed not yet delivered, acks not yet done."""
        if os.getpid() != self._pid:
            return []
        if self.closed:
            # Closing restored (or tried to restore) what it held; a row it could not restore is rescued
            # like a dead consumer's. A later ack of a task that ran on still deletes its row.
            with self._acks_lock:
                return list(self._pending_acks)
        ids = [*self._row_ids.values(), *self.pending_acks()]
        for buffer in list(self._buffers.values()):
            ids.extend(row_id for row_id, _ in list(buffer))
        return ids

    def pending_acks(self) -> list[int]:
        """Rows acked but not yet deleted (gathered for the next round trip, or acked while the database was away)."""
        if os.getpid() != self._pid:
            return []
        with self._acks_lock:
            return [*self._pending_acks, *self._acks_due]

    def acks_for_rescue(self) -> list[int]:
        """Acked rows not yet deleted, all now the rescue pass's to delete (the consuming thread no longer will)."""
        if os.getpid() != self._pid:
            return []
        with self._acks_lock:
            self._pending_acks.update(self._acks_due)
            self._acks_due = []
            return list(self._pending_acks)

    def forget_acks(self, row_ids: list[int]) -> None:
        """These acked rows are deleted."""
        with self._acks_lock:
            self._pending_acks.difference_update(row_ids)

    def _restore_tags(self, tags: Iterable[str]) -> None:
        restored = {tag: self._row_ids.pop(tag) for tag in tags if tag in self._row_ids}
        self._released.update(restored)
        self._restore_ids(list(restored.values()))

    def _restore_buffer(self, queue: str) -> None:
        buffer = self._buffers.pop(queue, None)
        if buffer:
            self._restore_ids([row_id for row_id, _ in buffer])

    def _restore_ids(self, ids: list[int]) -> None:
        if not ids or os.getpid() != self._pid:
            return
        try:
            self._run(sql.RESTORE_ROWS, (ids,))
            transport = cast("Transport | None", self.connection)
            if transport is not None:
                transport.cursors.reset()  # the restored rows are behind the cursor
        except Exception as exc:
            # The database is gone, and with it the claiming session: no longer held by anyone, the rows are
            # rescued (or expire) like a dead consumer's.
            logger.warning(
                "broker.restore_deferred",
                extra={"event": "broker.restore_deferred", "rows": len(ids), "error": str(exc)},
            )

    def close(self) -> None:
        if os.getpid() != self._pid:
            # Inherited across fork: the parent owns these sockets and rows.
            self._forget_parent_state()
            self.closed = True
            return
        was_closed = self.closed
        if not was_closed:
            # The waker may be about to send this channel's last wake-ups on its connection.
            process_waker().flush(timeout=2.0)
            self.flush_acks()
        super().close()  # cancels consumers (restoring their buffers) and restores unacked rows
        if not was_closed:
            for queue in list(self._buffers):
                self._restore_buffer(queue)
            self._unbind_all()
            self._drop_connection(broken=False)


def _tick_soon() -> None:
    """A hub timer's callback: it does nothing, but the hub runs its ticks after firing it."""


def _held_by_process() -> tuple[list[int], list[int]]:
    """(rows this process holds, acked rows not yet deleted: from now on the rescue pass's), over all its channels."""
    pid = os.getpid()
    held: list[int] = []
    acks: list[int] = []
    for owner in [c for c in list(_channels) if c._pid == pid]:
        pending = owner.acks_for_rescue()
        acks.extend(pending)
        deleting = set(pending)
        held.extend(row_id for row_id in owner.in_flight_ids() if row_id not in deleting)
    return held, acks


def scheduled_for(message: dict) -> datetime.datetime | None:
    """The UTC time (naive, like kombu_message.timestamp) a Celery message with a future ETA is due; else None."""
    eta = (message.get("headers") or {}).get("eta")
    if not eta:
        return None
    try:
        due = datetime.datetime.fromisoformat(eta)
    except (TypeError, ValueError):
        return None  # not ours to judge: Celery reads it again when the message arrives
    if due.tzinfo is not None:
        due = due.astimezone(datetime.UTC).replace(tzinfo=None)
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    return due if due > now + SCHEDULE_MARGIN else None


def _rescue_pass(
    channel: Channel, options: TransportOptions, db: psycopg.Connection, *, sweep: bool
) -> tuple[int, float | None]:
    """Re-own for `channel`'s session, retry deferred acks, rescue dead claimers' rows (marking them orphaned
    first only if `sweep`), make due ones ready, on connection `db`; (rows made ready, seconds until next due)."""
    held, acks = _held_by_process()
    pid, started = channel.claimer_identity()
    params = {
        "held": held,
        "acks": acks,
        "grace": options.rescue_grace,
        "restart_grace": options.restart_grace,
        "sweep": sweep,
        "pid": pid,
        "started": started,
    }
    row = db.execute(sql.RESCUE, params).fetchone()
    assert row is not None  # one row: the statement's final SELECT has no FROM
    _acked, ready, marks, next_due = row
    for owner in list(_channels):
        owner.forget_acks(acks)
    if marks:
        _announce_cancelled(set(marks))
    return ready, None if next_due is None else float(next_due)


# Inside Transport's body the name Channel is its class attribute, not a type.
DooritoChannel = Channel


def _driver_connection(fairy: Any) -> psycopg.Connection:
    """The psycopg connection behind an SQLAlchemy pool checkout (raises if the pool handed out none)."""
    connection = fairy.driver_connection
    if connection is None:
        raise psycopg.InterfaceError("the engine's pool returned a checkout without a connection")
    return connection


class Transport(stock.Transport):
    """Consumes with LISTEN/NOTIFY wake-ups; polls only as a slow fallback; rescues dead consumers' rows."""

    Channel = Channel
    polling_interval = 5.0
    connection_errors: tuple[type[Exception], ...] = (  # type: ignore[assignment]  # kombu's stub narrows it to SQLAlchemy's
        SAOperationalError,
        psycopg.OperationalError,
        psycopg.InterfaceError,
    )
    channel_errors = ()
    driver_name = "doorito-postgresql"
    # Not kombu's "sql": Celery disables events for that type (the stock transport has no fanout). Gossip and
    # mingle stay off (Celery enables them for "amqp" and "redis" only): they would add idle broadcast traffic.
    driver_type = "postgresql"
    implements = stock.Transport.implements.extend(
        asynchronous=True, exchange_type=frozenset(["direct", "topic", "fanout"])
    )

    def __init__(self, client: Any, **kwargs: Any) -> None:
        self.options = TransportOptions.parse(client.transport_options)
        super().__init__(client, **kwargs)
        self.polling_interval = self.options.polling_interval
        self._pid = os.getpid()
        self.known_empty: set[int] = set()
        # Bumped by rows_may_be_ready(): a claim that found nothing marks its queue empty only if no other thread
        # made rows ready meanwhile (its snapshot may predate them, and the wake-up came before it ended).
        self.news = 0
        # How long an arm of wake_wanted_until holds, and (queue id -> monotonic time) until when this process's
        # own last arm holds: a sleep needs no statement while that covers it. Forgotten for a queue when a NOTIFY
        # for it arrives (the wake-up that sent it cleared the flag), and for all when the LISTEN session is
        # replaced (a NOTIFY may have been missed meanwhile).
        self._wake_hold = 2 * self.polling_interval + WAKE_HOLD_MARGIN
        self._armed_until: dict[int, float] = {}
        # Queues armed while their flag was unset, claimed once more at _recheck_at before the long sleep.
        self._recheck: set[int] = set()
        self._recheck_at = 0.0
        self._listener: psycopg.Connection | None = None
        # A self-pipe lets an ack (from any thread) interrupt the wait; made when consuming starts.
        self._wake_read = self._wake_write = -1
        self._next_poll = 0.0
        # Celery's event loop (kombu's Hub), when the worker consumes from one; what this transport registered.
        self._hub: Any = None
        self._hub_timers: list[Any] = []
        self._watched: psycopg.Connection | None = None
        self._watched_fds: tuple[int, ...] = ()
        # Rescue passes and lease renewals run in a thread: Celery's main thread blocks in the pool's
        # apply_async whenever every child is busy, for as long as a task runs.
        self._keeper: threading.Thread | None = None
        self._keeper_stop = threading.Event()
        # The keeper's own connection: under a held xmin a rescue pass walks every claimed row version VACUUM
        # may not remove yet; on the claiming channel's connection each claim would wait for it.
        self._keeper_db: psycopg.Connection | None = None
        # Claim cursors, and the storage upkeep that looks back behind them and vacuums (its own thread).
        self.cursors = ClaimCursors()
        self._upkeep = StorageUpkeep(
            connect=self._own_connection,
            cursors=self.cursors,
            vacuum_threshold=self.options.vacuum_threshold,
            compact_above=self.options.compact_above,
        )
        self._upkeeper: threading.Thread | None = None

    def establish_connection(self) -> Any:
        # Prove the database answers, so Celery's connection retry (with backoff) sees a real failure.
        result = super().establish_connection()
        self._avail_channels[-1]._run("SELECT 1")
        return result

    def rows_may_be_ready(self) -> None:
        """Another thread of this process made rows ready (or found them behind a cursor): claim again at once."""
        self.news += 1
        self.known_empty.clear()
        self.wake()

    def wake(self) -> None:
        """Interrupt a consumer waiting for notifications (capacity was freed by an ack)."""
        if self._wake_write >= 0 and os.getpid() == self._pid:  # a forked child must not wake its parent
            with contextlib.suppress(OSError):
                os.write(self._wake_write, b"x")

    def _forget_parent_state(self) -> None:
        """In a forked child: leave the parent's LISTEN connection alone and make our own wake pipe."""
        self._keeper = self._upkeeper = None  # the parent's threads do not exist here
        self._hub, self._hub_timers, self._watched, self._watched_fds = None, [], None, ()  # the parent's loop
        if self._keeper_db is not None:
            _inherited.append(self._keeper_db)  # the parent's session: never closed from here
            self._keeper_db = None
        self.cursors.reset()
        if self._listener is not None:
            _inherited.append(self._listener)
        self._listener = None
        if self._wake_read >= 0:
            # Closing our copies of the descriptors does not affect the parent's.
            for fd in (self._wake_read, self._wake_write):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_read = self._wake_write = -1
        self.known_empty.clear()
        self._armed_until.clear()
        self._recheck.clear()
        self._pid = os.getpid()

    def _broker_url(self) -> str:
        """The database URL the kombu Connection was made with (kombu keeps it as the hostname)."""
        if self.client is None or not self.client.hostname:
            raise psycopg.InterfaceError("the transport has no broker URL (no kombu Connection)")
        return str(self.client.hostname)

    def _listen(self) -> psycopg.Connection:
        if os.getpid() != self._pid:
            self._forget_parent_state()
        if self._wake_read < 0:
            self._wake_read, self._wake_write = os.pipe()
            os.set_blocking(self._wake_read, False)
            os.set_blocking(self._wake_write, False)
        if self._listener is None:
            connection = self._own_connection()  # a long-lived LISTEN connection does not count against the pool
            try:
                connection.execute(f"LISTEN {sql.NOTIFY_CHANNEL}")
                connection.execute(f"LISTEN {fanout.BINDINGS_CHANNEL}")
            except Exception:
                connection.close()
                raise
            self._listener = connection
            self.known_empty.clear()  # anything may have arrived while we were not listening
            self._armed_until.clear()  # and a wake-up may have cleared our flags: arm again before sleeping
            fanout.forget_bindings()
        return self._listener

    def _drop_listener(self) -> None:
        if self._watched is not None:
            self._unwatch()
        listener, self._listener = self._listener, None
        if listener is not None and os.getpid() == self._pid:
            with contextlib.suppress(Exception):
                listener.close()

    def close_connection(self, connection: Any) -> None:
        self._keeper_stop.set()
        self._leave_event_loop()
        super().close_connection(connection)
        self._drop_listener()
        self._stop_upkeep()
        if os.getpid() == self._pid and self._wake_write >= 0:
            # Mark them closed first: a late wake() must never write to a reused descriptor.
            fds, self._wake_read, self._wake_write = (self._wake_read, self._wake_write), -1, -1
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        deadline = None if timeout is None else monotonic() + timeout
        self._listen()  # first: in a forked child it forgets the parent's state, keeper included
        self._start_keeper()
        while True:
            # A lost LISTEN session is replaced here; only if that fails too does Celery see a connection error
            # (and restart its consumer, which gives back the prefetched messages).
            listener = self._listen()
            now = monotonic()
            self._forget_empty_when_due(now)
            cycle = self.cycle
            if cycle is None:  # kombu builds it on the first channel; no channel yet means nothing to consume
                raise Empty()
            try:
                cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            for channel in list(self.channels or []):  # nothing to deliver: the acks gathered go out before a wait
                cast(DooritoChannel, channel).flush_acks()
            wait_until = self._next_poll
            if deadline is not None:
                if now >= deadline:
                    raise TimeoutError()
                wait_until = min(wait_until, deadline)
            # Producers wake only queues whose flag is armed: arm the ones this sleep relies on a NOTIFY for.
            unset, armed_until = self._arm_sleeping_queues()
            if unset:
                continue  # claim those queues again before sleeping (see _arm_sleeping_queues)
            wait_until = min(wait_until, armed_until)
            if self._recheck:
                wait_until = min(wait_until, self._recheck_at)
            self._wait(listener, max(0.0, wait_until - monotonic()))

    def _forget_empty_when_due(self, now: float) -> None:
        """At each fallback poll, and when the short pause after an arm is over, claim the empty queues again."""
        if now >= self._next_poll:
            self.known_empty.clear()
            self._next_poll = now + self.polling_interval
        if self._recheck and now >= self._recheck_at:
            self.known_empty.difference_update(self._recheck)
            self._recheck.clear()

    # --- Celery's event loop (asynloop) ----------------------------------------------------------------------
    # With it, Celery's prefork pool hands tasks to its children through their own pipes, written when
    # writable, instead of a shared queue behind semaphores that the consuming thread blocks on.
    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """Consume from `loop` (kombu's Hub): each tick claims and delivers what it can without waiting, and the
        hub's poll sleeps on the LISTEN session and the wake pipe beside the pool's pipes."""
        self._leave_event_loop()
        self._hub = loop
        self._listen()
        self._start_keeper()
        self._watch_in_event_loop()
        loop.on_tick.add(self._on_tick)
        # A timer bounds the hub's sleep: the tick after it runs the fallback poll (_forget_empty_when_due).
        self._hub_timers.append(loop.call_repeatedly(self.polling_interval, _tick_soon))

    def tick_after(self, seconds: float) -> None:
        """In the event loop: make sure a tick runs within `seconds` (the hub sleeps no longer)."""
        if self._hub is not None:
            self._hub.call_later(seconds, _tick_soon)

    def _watch_in_event_loop(self) -> None:
        """Have the hub wake this process for NOTIFYs on the current LISTEN session and for the wake pipe."""
        listener = self._listen()
        if listener is self._watched:
            return
        self._unwatch()
        socket = listener.pgconn.socket
        self._hub.add_reader(socket, self._on_notifications)
        self._hub.add_reader(self._wake_read, self._empty_wake_pipe)
        self._watched, self._watched_fds = listener, (socket, self._wake_read)

    def _unwatch(self) -> None:
        # Before the descriptors close: the hub must never poll a number the next socket or pipe reuses.
        for fd in self._watched_fds:
            with contextlib.suppress(Exception):
                self._hub.remove_reader(fd)
        self._watched, self._watched_fds = None, ()

    def _leave_event_loop(self) -> None:
        hub = self._hub
        if hub is None:
            return
        self._unwatch()
        hub.on_tick.discard(self._on_tick)
        for timer in self._hub_timers:
            timer.cancel()
        self._hub_timers.clear()
        self._hub = None

    def _on_notifications(self) -> None:
        if self._listener is not None:
            self._read_notifications(self._listener)  # a lost session is replaced by the next tick

    def _on_tick(self) -> None:
        """Deliver what can be claimed now, without waiting; then, unless a claim is gathering room (it will carry
        them), delete the acks gathered, and arm the wake-ups of the queues the hub will sleep on."""
        if self._hub is None or os.getpid() != self._pid or self.cycle is None:
            return
        self._watch_in_event_loop()
        delivered = 0
        while delivered < MAX_DELIVERIES_PER_TICK:
            self._forget_empty_when_due(monotonic())
            try:
                self.cycle.get(self._deliver, timeout=0)
            except Empty:
                break
            delivered += 1
        if delivered:
            # The pool registers its pipe writes in a tick of its own, which may have run before this one: the
            # hub must not sleep before it has. And more may be ready.
            self.wake()
            return
        for channel in list(self.channels or []):
            if not cast(DooritoChannel, channel).gathering():
                cast(DooritoChannel, channel).flush_acks()
        unset, _armed_until = self._arm_sleeping_queues()
        if unset:
            self.wake()  # claim those queues again at once (see _arm_sleeping_queues)
        if self._recheck:
            self.tick_after(max(0.0, self._recheck_at - monotonic()))

    def _sleeping_queues(self) -> set[int]:
        """Queues this process consumes and found empty: it claims them again only when woken, or at the poll."""
        consumed: set[int] = set()
        for channel in list(self.channels or []):
            consumed |= cast(DooritoChannel, channel).consumed_queue_ids()
        return consumed & self.known_empty

    def _arm_sleeping_queues(self) -> tuple[bool, float]:
        """Have producers wake the queues this process is about to sleep on, for the whole sleep; returns (whether
        a flag was unset: the caller must claim those queues again first, monotonic time the flags cover).

        The first publish that finds the flag armed clears it (sql.INSERT_MESSAGE) and sends the wake-up, so with
        several consumers asleep on one queue no message waits for the poll: its NOTIFY reaches every listening
        session, so it wakes all of them, not one, and each forgets its arm (_read_notifications; a busy one when it
        next reads them, before it could sleep). The flag stays unset until the first of their arms commits; that
        arm finds it unset (sql.ARM_WAKE judges by the version it overwrites, even one a publish cleared after its
        snapshot), so its consumer claims again after it, which covers every producer that read the flag unset
        meanwhile. Those arming later find it set and sleep, and the next publish wakes them all again. A consumer
        that missed the NOTIFY (its LISTEN session was replaced) forgets all its arms. Left to the poll (or another
        consumer's claim), as without the clear: a producer stalled for more than RECHECK_AFTER_ARM inside its
        INSERT, or a wake-up that could not be sent.
        """
        sleeping = self._sleeping_queues()
        channel = self._consuming_channel()
        if not sleeping or channel is None:  # nothing to wake us for (e.g. every prefetch slot is full: acks do)
            return False, float("inf")
        now = monotonic()
        due = sorted(q for q in sleeping if self._armed_until.get(q, 0.0) < now + self.polling_interval)
        unset: list[int] = []
        if due:
            rows = channel._run(sql.ARM_WAKE, {"queues": due, "hold": self._wake_hold}, fetch=True)
            for queue_id in due:  # a queue whose row is gone has nothing to arm: not asked again for a hold
                self._armed_until[queue_id] = now + self._wake_hold
            for queue_id, ahead, was_unset in rows:
                # NULL: another process armed it concurrently, after this statement's snapshot: ask again.
                self._armed_until[queue_id] = now + (0.0 if ahead is None else float(ahead))
                if was_unset:
                    unset.append(queue_id)
        if unset:
            # A producer whose INSERT began before this arm committed read the flag as unset and sends no NOTIFY,
            # while our last claim may have run before its row committed. So: claim again now (rows committed
            # since), and once more RECHECK_AFTER_ARM later (rows of INSERTs still running at the arm's commit).
            # What remains: a producer stalled longer than that inside its INSERT, between its snapshot and its
            # commit; its message is found at the next poll (BROKER_POLLING_INTERVAL) or by another consumer.
            self.known_empty.difference_update(unset)
            self._recheck.update(unset)
            self._recheck_at = monotonic() + RECHECK_AFTER_ARM
            return True, now
        return False, min(self._armed_until.get(q, float("inf")) for q in sleeping)

    def _start_keeper(self) -> None:
        """Start this consuming process's keeper and upkeep threads (once; again in a forked child that consumes)."""
        if self._keeper_stop.is_set():
            return  # closed
        if self._keeper is None or not self._keeper.is_alive():
            self._keeper = threading.Thread(target=self._keep, name="doorito-broker-keeper", daemon=True)
            self._keeper.start()
        if self._upkeeper is None or not self._upkeeper.is_alive():
            self._upkeeper = threading.Thread(target=self._keep_storage, name="doorito-broker-upkeep", daemon=True)
            self._upkeeper.start()

    def _keep_storage(self) -> None:
        """Each rescue interval (or ten times the look-back's own time, if longer): look back behind the claim
        cursors, and VACUUM or compact when due."""
        try:
            while not self._keeper_stop.wait(max(self.options.rescue_interval, 10 * self._upkeep.look_back_seconds)):
                if os.getpid() != self._pid:
                    return
                try:
                    if self._upkeep.run():  # rows ready behind a cursor: claim them now
                        self.rows_may_be_ready()
                except Exception as exc:  # the database is away: the next pass tries again
                    logger.warning("broker.upkeep_failed", extra={"event": "broker.upkeep_failed", "error": str(exc)})
        finally:
            self._upkeep.close()

    def _stop_upkeep(self) -> None:
        """Let the keeper and upkeep threads close their connections (each stops within a statement; a VACUUM is
        not waited out)."""
        for thread in (self._keeper, self._upkeeper):
            if thread is not None and os.getpid() == self._pid and thread is not threading.current_thread():
                thread.join(timeout=5)

    def _own_connection(self) -> psycopg.Connection:
        """A live autocommit connection of its own, outside the pool: the LISTEN session's, the keeper's or the
        upkeep's. A pooled connection whose server session is gone is discarded, not handed on (the pool does
        not check them; a LISTEN on one failed, seen once after another test had terminated sessions)."""
        engine = engine_for(self._broker_url(), self.options.engine_options)
        for attempt in (1, 2, 3):
            fairy = engine.raw_connection()
            connection = _driver_connection(fairy)
            try:
                connection.autocommit = True
                connection.execute("SELECT 1")
            except CONNECTION_ERRORS:
                fairy.invalidate()
                if attempt == 3:
                    raise
                continue
            fairy.detach()
            return connection
        raise AssertionError("unreachable")

    def _keep(self) -> None:
        """Rescue passes each rescue interval (or sooner, when a scheduled message is due); leases every
        min(visibility timeout / 4, 30 s); on the keeper's own connection."""
        next_maintenance = 0.0
        pause = self.options.rescue_interval
        try:
            while not self._keeper_stop.wait(pause):
                if os.getpid() != self._pid:
                    return
                pause = self.options.rescue_interval
                try:
                    if self._keeper_db is None:
                        self._keeper_db = self._own_connection()
                    next_due = self._rescue(self._keeper_db)
                    if next_due is not None:
                        pause = min(pause, max(0.0, next_due))
                    if monotonic() >= next_maintenance:
                        self._maintain(self._keeper_db)
                        next_maintenance = monotonic() + min(self.options.visibility_timeout / 4, 30.0)
                except Exception as exc:  # the database is away: the next pass tries again, on a new connection
                    logger.warning("broker.rescue_failed", extra={"event": "broker.rescue_failed", "error": str(exc)})
                    self._close_keeper_db()
        finally:
            if os.getpid() == self._pid:
                self._close_keeper_db()

    def _close_keeper_db(self) -> None:
        db, self._keeper_db = self._keeper_db, None
        if db is not None:
            with contextlib.suppress(Exception):
                db.close()

    def _wait(self, listener: psycopg.Connection, seconds: float) -> None:
        """Sleep until a NOTIFY for one of our queues, a wake-up, or `seconds` pass."""
        readable, _, _ = select.select([listener.pgconn.socket, self._wake_read], [], [], seconds)
        if self._wake_read in readable:
            self._empty_wake_pipe()
        if listener.pgconn.socket in readable:
            self._read_notifications(listener)

    def _empty_wake_pipe(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_read, 4096):
                pass

    def _read_notifications(self, listener: psycopg.Connection) -> None:
        """Take the NOTIFYs that arrived: queues with news are claimed again; a lost session is replaced."""
        pgconn = listener.pgconn
        try:
            pgconn.consume_input()
            lost = pgconn.status != psycopg.pq.ConnStatus.OK
        except psycopg.OperationalError:
            lost = True
        if lost:
            logger.warning("broker.listener_lost", extra={"event": "broker.listener_lost"})
            self._drop_listener()  # the next _listen() replaces it (and forgets known_empty)
            return
        while (notify := pgconn.notifies()) is not None:
            if notify.relname == fanout.BINDINGS_CHANNEL.encode():
                fanout.forget_bindings(notify.extra.decode())
                continue
            with contextlib.suppress(ValueError):
                queue_id = int(notify.extra)
                self.known_empty.discard(queue_id)
                # The wake-up that sent this cleared the queue's flag (or, from the insert trigger, left it):
                # arm again before the next sleep, however long our own last arm would still hold.
                self._armed_until.pop(queue_id, None)

    def _consuming_channel(self) -> DooritoChannel | None:
        """The open channel that claims (so its session is the claimer the rescue pass keeps current)."""
        open_channels = [cast(DooritoChannel, c) for c in (self.channels or []) if not c.closed]
        return next((c for c in open_channels if c._consumers), next(iter(open_channels), None))

    def _rescue(self, db: psycopg.Connection) -> float | None:
        """Run the rescue pass (see common.broker.sql.RESCUE); returns seconds until the next scheduled message."""
        channel = self._consuming_channel()
        if channel is None:
            return None
        # Marking orphans walks every claimed row version VACUUM may not remove yet; spacing it out under a held
        # xmin delayed the rescue of a killed worker's tasks past 5 s (test_resume_after_kill), so it runs each pass,
        # on the keeper's connection: claims never wait for it.
        ready, next_due = _rescue_pass(channel, self.options, db, sweep=True)
        if ready:  # wake our own claims too (the restore trigger's NOTIFY wakes everyone else)
            self.cursors.reset()  # the rows made ready are behind the cursors
            self.rows_may_be_ready()
        return next_due

    def _maintain(self, db: psycopg.Connection) -> None:
        """Renew the leases this process holds, and make expired leases (dead consumers) visible again."""
        if self._consuming_channel() is None:
            return
        held, _acks = _held_by_process()
        if held:
            db.execute(sql.RENEW_LEASES, (held,))
        if db.execute(sql.RESTORE_EXPIRED, (self.options.visibility_timeout,)).rowcount:
            self.cursors.reset()
            self.rows_may_be_ready()
