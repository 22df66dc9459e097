"""Doorito's PostgreSQL transport for kombu: kombu's SQLAlchemy transport, hardened.

Same tables (kombu_queue, kombu_message) and URL form (sqla+postgresql+psycopg://)
as the stock transport, so stock producers and consumers interoperate. What
changes is how rows move:

- publish: one INSERT with a cached queue id; a trigger NOTIFYs listeners;
- claim: one UPDATE ... FOR UPDATE SKIP LOCKED ... RETURNING round trip, which
  marks rows in flight (visible = false, version = -1, timestamp = claim time);
- ack: DELETE the row, so the table holds only ready and in-flight messages;
- crash: in-flight rows whose lease (timestamp) is older than the visibility
  timeout become visible again; live consumers renew the leases they hold.

version = -1 marks rows claimed by this transport. The stock transport never
deletes what it consumed and leaves those rows invisible with version >= 1,
so they are never mistaken for a crashed consumer's messages.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import select
import threading
from collections import deque
from dataclasses import dataclass
from json import dumps, loads
from queue import Empty
from time import monotonic

import psycopg
from kombu.transport import sqlalchemy as stock
from kombu.transport import virtual
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.orm import sessionmaker

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "kombu_message_ready"
QUEUE_TABLE = "kombu_queue"
MESSAGE_TABLE = "kombu_message"

# Options this transport reads itself (or kombu/Celery read); they never reach create_engine.
OWN_OPTIONS = frozenset({"polling_interval", "visibility_timeout", "claim_batch"})
KOMBU_OPTIONS = frozenset(
    {
        "queue_tablename",
        "message_tablename",
        "callback",
        "errback",
        "max_retries",
        "interval_start",
        "interval_step",
        "interval_max",
        "retry_errors",
        "confirm_publish",
    }
)
# Keyword arguments sqlalchemy.create_engine() accepts; anything else is a configuration error.
ENGINE_OPTIONS = frozenset(
    {
        "connect_args",
        "creator",
        "echo",
        "echo_pool",
        "enable_from_linting",
        "execution_options",
        "hide_parameters",
        "insertmanyvalues_page_size",
        "isolation_level",
        "json_deserializer",
        "json_serializer",
        "label_length",
        "logging_name",
        "max_identifier_length",
        "max_overflow",
        "plugins",
        "pool",
        "poolclass",
        "pool_logging_name",
        "pool_pre_ping",
        "pool_recycle",
        "pool_reset_on_return",
        "pool_size",
        "pool_timeout",
        "pool_use_lifo",
        "query_cache_size",
        "use_insertmanyvalues",
    }
)

INSERT_MESSAGE = (
    "INSERT INTO kombu_message (id, visible, timestamp, payload, version, queue_id) "
    "VALUES (nextval('message_id_sequence'), true, now() AT TIME ZONE 'UTC', %s, 1, %s)"
)
# The ARRAY() sub-select runs once (an InitPlan), then the UPDATE touches exactly the locked rows.
CLAIM = (
    "UPDATE kombu_message SET visible = false, version = -1, timestamp = now() AT TIME ZONE 'UTC' "
    "WHERE id = ANY(ARRAY(SELECT id FROM kombu_message WHERE queue_id = %s AND visible "
    "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)) RETURNING id, payload"
)
DELETE_ROW = "DELETE FROM kombu_message WHERE id = %s"
RESTORE_ROWS = (
    "UPDATE kombu_message SET visible = true, version = 1 WHERE id = ANY(%s) AND NOT visible AND version = -1"
)
RENEW_LEASES = (
    "UPDATE kombu_message SET timestamp = now() AT TIME ZONE 'UTC' WHERE id = ANY(%s) AND NOT visible AND version = -1"
)
RESTORE_EXPIRED = (
    "UPDATE kombu_message SET visible = true, version = 1 WHERE NOT visible AND version = -1 "
    "AND timestamp < now() AT TIME ZONE 'UTC' - make_interval(secs => %s)"
)
QUEUE_ID = (
    "WITH found AS (SELECT id FROM kombu_queue WHERE name = %(name)s), "
    "created AS (INSERT INTO kombu_queue (id, name) SELECT nextval('queue_id_sequence'), %(name)s "
    "WHERE NOT EXISTS (SELECT 1 FROM found) ON CONFLICT (name) DO NOTHING RETURNING id) "
    "SELECT id FROM found UNION ALL SELECT id FROM created"
)

# Set by common.broker.services.transactional: publish through this Django cursor instead.
transaction_cursor: contextvars.ContextVar = contextvars.ContextVar("doorito_broker_transaction_cursor", default=None)
# Incremented by each publish made through transaction_cursor, so the caller can verify it happened.
transaction_publishes: contextvars.ContextVar = contextvars.ContextVar("doorito_broker_transaction_publishes")


@dataclass(frozen=True)
class TransportOptions:
    """The transport's own options, validated; and the engine options to pass through."""

    polling_interval: float
    visibility_timeout: float
    claim_batch: int
    engine_options: dict

    @classmethod
    def parse(cls, options: dict) -> TransportOptions:
        for name in ("queue_tablename", "message_tablename"):
            expected = QUEUE_TABLE if name == "queue_tablename" else MESSAGE_TABLE
            if options.get(name, expected) != expected:
                raise ValueError(f"broker transport option {name}: this transport uses the migrated {expected} table")
        unknown = set(options) - OWN_OPTIONS - KOMBU_OPTIONS - ENGINE_OPTIONS
        if unknown:
            raise ValueError(f"unknown broker transport option(s): {', '.join(sorted(unknown))}")
        parsed = cls(
            polling_interval=float(options.get("polling_interval", 5.0)),
            visibility_timeout=float(options.get("visibility_timeout", 360.0)),
            claim_batch=int(options.get("claim_batch", 4)),
            engine_options={k: v for k, v in options.items() if k in ENGINE_OPTIONS},
        )
        if parsed.polling_interval <= 0 or parsed.visibility_timeout <= 0 or parsed.claim_batch < 1:
            raise ValueError(
                "broker transport options: polling_interval and visibility_timeout must be > 0, claim_batch >= 1"
            )
        return parsed


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


class QoS(virtual.QoS):
    """Unacked messages stay rows in the table: restoring is an UPDATE, never a re-publish or a dump file."""

    def reject(self, delivery_tag, requeue=False):
        # Channel.basic_reject already requeued or deleted the row.
        self._quick_ack(delivery_tag)

    def restore_unacked(self):
        self._flush()
        tags = list(self._delivered)
        self._delivered.clear()
        self.channel._restore_tags(tags)
        return []

    def restore_unacked_once(self, stderr=None):
        self._on_collect.cancel()
        self._flush()
        state = self._delivered
        if getattr(state, "restored", False) or not self.restore_at_shutdown or not self.channel.do_restore:
            return
        try:
            self.restore_unacked()
        finally:
            state.restored = True


class Channel(stock.Channel):
    """A channel with its own autocommit connection from the process's engine pool."""

    QoS = QoS

    def __init__(self, connection, **kwargs):
        self.options = TransportOptions.parse(connection.client.transport_options)
        # Kept here: kombu unsets channel.connection at close, and a late ack still needs the database.
        self._url = connection.client.hostname
        self._pid = os.getpid()
        self._dbapi = None
        self._db_lock = threading.RLock()
        self._row_ids: dict[str, int] = {}  # delivery tag -> kombu_message.id, for ack/reject
        self._buffers: dict[str, deque] = {}  # queue -> claimed rows not yet delivered
        super().__init__(connection, **kwargs)

    # --- connection handling -------------------------------------------------
    def _engine_from_config(self):
        return engine_for(self._url, self.options.engine_options)

    def _open(self):
        # The stock _open also runs metadata.create_all; our schema comes from a Django migration.
        engine = self._engine_from_config()
        return engine, sessionmaker(bind=engine)

    def _connection(self) -> psycopg.Connection:
        if os.getpid() != self._pid:
            self._forget_parent_state()
        if self._dbapi is None:
            fairy = self._engine_from_config().raw_connection()
            fairy.driver_connection.autocommit = True
            self._dbapi = fairy
        return self._dbapi.driver_connection

    def _forget_parent_state(self) -> None:
        """In a forked child: drop the parent's connection and rows unused (the parent still owns both)."""
        if self._dbapi is not None:
            _inherited.append(self._dbapi)
        self._dbapi = None
        self._row_ids.clear()
        self._buffers.clear()
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

    def _run(self, sql: str, params=(), *, fetch: bool = False, retry: bool = True):
        """Run one autocommit statement; after a lost connection, retry once on a fresh one if `retry`."""
        for attempt in (1, 2):
            with self._db_lock:
                try:
                    cursor = self._connection().execute(sql, params)
                    return cursor.fetchall() if fetch else cursor.rowcount
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    self._drop_connection(broken=True)
                    if attempt == 2 or not retry:
                        raise

    # --- queues ----------------------------------------------------------------
    def _queue_id(self, queue: str) -> int:
        key = (self._url, queue)
        queue_id = _queue_ids.get(key)
        if queue_id is None:
            for _ in range(3):  # a concurrent creator may win the ON CONFLICT race; then read its row
                rows = self._run(QUEUE_ID, {"name": queue}, fetch=True)
                if rows:
                    queue_id = _queue_ids[key] = rows[0][0]
                    break
            else:
                raise RuntimeError(f"could not create or find broker queue {queue!r}")
        return queue_id

    def _get_or_create(self, queue):
        return self._queue_id(queue)

    def _new_queue(self, queue, **kwargs):
        self._queue_id(queue)

    def _size(self, queue):
        sql = "SELECT count(*) FROM kombu_message WHERE queue_id = %s AND visible"
        return self._run(sql, (self._queue_id(queue),), fetch=True)[0][0]

    def _purge(self, queue):
        # Only ready messages: in-flight ones belong to running consumers.
        return self._run("DELETE FROM kombu_message WHERE queue_id = %s AND visible", (self._queue_id(queue),))

    # --- publish -------------------------------------------------------------------
    def _put(self, queue, message, **kwargs):
        payload = dumps(message)
        queue_id = self._queue_id(queue)
        cursor = transaction_cursor.get()
        try:
            if cursor is not None:
                cursor.execute(INSERT_MESSAGE, (payload, queue_id))
                transaction_publishes.set(transaction_publishes.get(0) + 1)
            else:
                # An INSERT whose reply was lost may have committed: never retry it blindly.
                self._run(INSERT_MESSAGE, (payload, queue_id), retry=False)
        except psycopg.errors.ForeignKeyViolation:
            _queue_ids.pop((self._url, queue), None)
            raise

    # --- consume -------------------------------------------------------------------
    def _get(self, queue):
        buffer = self._buffers.setdefault(queue, deque())
        if not buffer:
            queue_id = self._queue_id(queue)
            transport = self.connection
            if queue_id in transport.known_empty:
                raise Empty()
            rows = self._run(CLAIM, (queue_id, self._claim_size()), fetch=True)
            if not rows:
                transport.known_empty.add(queue_id)
                raise Empty()
            buffer.extend(sorted(rows))
        row_id, payload = buffer.popleft()
        message = loads(payload)
        self._row_ids[message["properties"]["delivery_tag"]] = row_id
        return message

    def _claim_size(self) -> int:
        room = self.qos.can_consume_max_estimate() if self._qos is not None else None
        return max(1, min(self.options.claim_batch, room or self.options.claim_batch))

    def basic_ack(self, delivery_tag, multiple=False):
        row_id = self._row_ids.pop(delivery_tag, None)
        if row_id is not None:
            self._run(DELETE_ROW, (row_id,))
            if self.closed:
                # A late ack after a reconnect still deletes the row (no second run), then lets go of the connection.
                self._drop_connection(broken=False)
        super().basic_ack(delivery_tag, multiple=multiple)
        self._wake_consumer()

    def basic_reject(self, delivery_tag, requeue=False):
        row_id = self._row_ids.pop(delivery_tag, None)
        if row_id is not None:
            if requeue:
                self._run(RESTORE_ROWS, ([row_id],))
            else:
                self._run(DELETE_ROW, (row_id,))
        super().basic_reject(delivery_tag, requeue=requeue)
        self._wake_consumer()

    def basic_cancel(self, consumer_tag):
        queue = self._tag_to_queue.get(consumer_tag)
        super().basic_cancel(consumer_tag)
        if queue is not None:
            self._restore_buffer(queue)

    def _wake_consumer(self):
        transport = self.connection
        if transport is not None:
            transport.wake()

    def in_flight_ids(self) -> list[int]:
        """Rows this channel holds: delivered but unacked, and claimed but not yet delivered."""
        ids = list(self._row_ids.values())
        for buffer in list(self._buffers.values()):
            ids.extend(row_id for row_id, _ in list(buffer))
        return ids

    def _restore_tags(self, tags) -> None:
        ids = [self._row_ids[tag] for tag in tags if tag in self._row_ids]
        self._restore_ids(ids)

    def _restore_buffer(self, queue: str) -> None:
        buffer = self._buffers.pop(queue, None)
        if buffer:
            self._restore_ids([row_id for row_id, _ in buffer])

    def _restore_ids(self, ids: list[int]) -> None:
        if not ids or os.getpid() != self._pid:
            return
        try:
            self._run(RESTORE_ROWS, (ids,))
        except Exception as exc:  # the database is gone: the rows come back after the visibility timeout
            logger.warning(
                "broker.restore_deferred",
                extra={"event": "broker.restore_deferred", "rows": len(ids), "error": str(exc)},
            )

    def close(self):
        if os.getpid() != self._pid:
            # Inherited across fork: the parent owns these sockets and rows.
            self._forget_parent_state()
            self.closed = True
            return
        was_closed = self.closed
        super().close()  # cancels consumers (restoring their buffers) and restores unacked rows
        if not was_closed:
            for queue in list(self._buffers):
                self._restore_buffer(queue)
            self._drop_connection(broken=False)


class Transport(stock.Transport):
    """Consumes with LISTEN/NOTIFY wake-ups; polls only as a slow fallback."""

    Channel = Channel
    polling_interval = 5.0
    connection_errors = (SAOperationalError, psycopg.OperationalError, psycopg.InterfaceError)
    channel_errors = ()
    driver_name = "doorito-postgresql"

    def __init__(self, client, **kwargs):
        self.options = TransportOptions.parse(client.transport_options)
        super().__init__(client, **kwargs)
        self.polling_interval = self.options.polling_interval
        self._pid = os.getpid()
        self.known_empty: set[int] = set()
        self._listener = None
        # A self-pipe lets an ack (from any thread) interrupt the wait; made when consuming starts.
        self._wake_read = self._wake_write = -1
        self._next_poll = 0.0
        self._next_maintenance = 0.0

    def establish_connection(self):
        # Prove the database answers, so Celery's connection retry (with backoff) sees a real failure.
        result = super().establish_connection()
        self._avail_channels[-1]._run("SELECT 1")
        return result

    def wake(self) -> None:
        """Interrupt a consumer waiting for notifications (capacity was freed by an ack)."""
        if self._wake_write >= 0 and os.getpid() == self._pid:  # a forked child must not wake its parent
            with contextlib.suppress(OSError):
                os.write(self._wake_write, b"x")

    def _forget_parent_state(self) -> None:
        """In a forked child: leave the parent's LISTEN connection alone and make our own wake pipe."""
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
        self._pid = os.getpid()

    def _listen(self):
        if os.getpid() != self._pid:
            self._forget_parent_state()
        if self._wake_read < 0:
            self._wake_read, self._wake_write = os.pipe()
            os.set_blocking(self._wake_read, False)
            os.set_blocking(self._wake_write, False)
        if self._listener is None:
            fairy = engine_for(self.client.hostname, self.options.engine_options).raw_connection()
            connection = fairy.driver_connection
            fairy.detach()  # a long-lived LISTEN connection does not count against the pool
            connection.autocommit = True
            try:
                connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
            except Exception:
                connection.close()
                raise
            self._listener = connection
            self.known_empty.clear()  # anything may have arrived while we were not listening
        return self._listener

    def _drop_listener(self):
        listener, self._listener = self._listener, None
        if listener is not None and os.getpid() == self._pid:
            with contextlib.suppress(Exception):
                listener.close()

    def close_connection(self, connection):
        super().close_connection(connection)
        self._drop_listener()
        if os.getpid() == self._pid and self._wake_write >= 0:
            # Mark them closed first: a late wake() must never write to a reused descriptor.
            fds, self._wake_read, self._wake_write = (self._wake_read, self._wake_write), -1, -1
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def drain_events(self, connection, timeout=None):
        deadline = None if timeout is None else monotonic() + timeout
        listener = self._listen()
        while True:
            now = monotonic()
            if now >= self._next_maintenance:
                self._maintain()
                self._next_maintenance = now + min(self.options.visibility_timeout / 4, 30.0)
            if now >= self._next_poll:
                self.known_empty.clear()
                self._next_poll = now + self.polling_interval
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            wait_until = min(self._next_poll, self._next_maintenance)
            if deadline is not None:
                if now >= deadline:
                    raise TimeoutError()
                wait_until = min(wait_until, deadline)
            self._wait(listener, max(0.0, wait_until - monotonic()))

    def _wait(self, listener: psycopg.Connection, seconds: float) -> None:
        """Sleep until a NOTIFY for one of our queues, a wake-up, or `seconds` pass."""
        pgconn = listener.pgconn
        readable, _, _ = select.select([pgconn.socket, self._wake_read], [], [], seconds)
        if self._wake_read in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_read, 4096):
                    pass
        if pgconn.socket in readable:
            try:
                pgconn.consume_input()
            except psycopg.OperationalError:
                self._drop_listener()
                raise
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                self._drop_listener()
                raise psycopg.OperationalError("broker: the LISTEN connection was closed by the server")
            while (notify := pgconn.notifies()) is not None:
                with contextlib.suppress(ValueError):
                    self.known_empty.discard(int(notify.extra))

    def _maintain(self) -> None:
        """Renew the leases this process holds, and make expired leases (dead consumers) visible again."""
        channel = next((c for c in self.channels if not c.closed), None)
        if channel is None:
            return
        held = [row_id for c in list(self.channels) for row_id in c.in_flight_ids()]
        if held:
            channel._run(RENEW_LEASES, (held,))
        if channel._run(RESTORE_EXPIRED, (self.options.visibility_timeout,)):
            self.known_empty.clear()
