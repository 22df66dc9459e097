"""Fanout and topic exchanges across processes: what `celery inspect`/`control`, `revoke`, events and Flower need.

kombu's virtual transports keep bindings in each process's memory, so a worker publishing a reply or an
event cannot know the queue `celery inspect` or Flower bound in another process. Bindings that others
must see are kept in kombu_binding (migration 0006): every binding to a fanout or topic exchange, and
every binding of a transient queue (auto-delete, exclusive, or with an expiry: Celery's reply queues).
Durable task queues stay in memory only, as before.

- delivery: a broadcast is one ordinary message row per bound queue (INSERT + wake-up), so it is
  claimed, woken by LISTEN/NOTIFY and cleaned like any message; no second delivery path;
- a binding belongs to the database session that made it, and counts only while that session exists:
  when a consumer dies, nothing is routed to its queue any more (an AMQP auto-delete queue), and the
  next prune deletes its binding and its queue's messages. A channel that reconnects re-binds;
- no-ack consumers (remote control, replies, events) take their rows with a DELETE: nobody acks them;
- cost when nobody listens: a topic exchange (Celery's events, the worker's heartbeats) reads the shared
  bindings at most once per BROKER_BINDING_CACHE_SECONDS per process, never once per message; a new binding
  NOTIFYs, so a consuming process (a worker) sees it at once. A direct exchange reads them only when no
  binding is known locally (replies); a fanout publish reads them once (control commands are rare).
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any

import psycopg
from kombu.transport import sqlalchemy as stock
from kombu.transport.virtual.exchange import STANDARD_EXCHANGE_TYPES, DirectExchange, TopicExchange

from common.broker.options import TransportOptions

logger = logging.getLogger(__name__)

# The NOTIFY channel of new bindings; its payload is the exchange.
BINDINGS_CHANNEL = "kombu_binding_changed"
# (broker URL, exchange) -> (monotonic expiry, live (routing key, queue) bindings), for the whole process.
_topic_cache: dict[tuple[str, str], tuple[float, list[tuple[str, str]]]] = {}
SHARED_EXCHANGE_TYPES = frozenset({"fanout", "topic"})
_MISSING = object()

# A binding counts while its owner's database session exists ((pid, backend_start) identifies a session;
# backend_start is NULL for another role's sessions without pg_read_all_stats, and the pid then decides).
_LIVE = (
    "EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = b.owner_pid "
    "AND (a.backend_start IS NULL OR a.backend_start = b.owner_started))"
)

# Raw SQL, not the ORM: these run on the transport's own autocommit psycopg connection, outside Django,
# and depend on pg_stat_activity and data-modifying CTEs.

# Record (or take over) a binding as the current session's.
BIND = (
    "WITH bound AS (INSERT INTO kombu_binding (exchange, routing_key, queue, owner_pid, owner_started, message_ttl) "  # noqa: S608 - BINDINGS_CHANNEL is a constant
    "VALUES (%(exchange)s, %(routing_key)s, %(queue)s, %(pid)s, %(started)s, %(ttl)s) "
    "ON CONFLICT (exchange, routing_key, queue) DO UPDATE SET owner_pid = EXCLUDED.owner_pid, "
    "owner_started = EXCLUDED.owner_started, message_ttl = EXCLUDED.message_ttl RETURNING id) "
    f"SELECT id, pg_notify('{BINDINGS_CHANNEL}', %(exchange)s) FROM bound"
)

UNBIND = "DELETE FROM kombu_binding WHERE queue = %s AND exchange = %s AND routing_key = %s"

# The live bindings of an exchange (of one routing key, if given).
LOOKUP = (
    f"SELECT b.routing_key, b.queue FROM kombu_binding b WHERE b.exchange = %(exchange)s "  # noqa: S608 - _LIVE is a constant
    f"AND (%(routing_key)s::text IS NULL OR b.routing_key = %(routing_key)s) AND {_LIVE}"
)

# Delete the bindings of sessions that are gone; delete the (ready: nobody claims them) messages of queues left
# with no live binding
# (nobody will ever consume them) and those older than their queue's message TTL (x-message-ttl); return
# the dead queues' names (their kombu_queue rows go next, once empty) and the messages deleted.
PRUNE = (
    f"WITH dead AS (DELETE FROM kombu_binding b WHERE NOT {_LIVE} RETURNING b.queue), "  # noqa: S608 - _LIVE is a constant
    "orphaned AS (SELECT DISTINCT queue FROM dead "
    f"WHERE queue NOT IN (SELECT b.queue FROM kombu_binding b WHERE {_LIVE})), "
    "purged AS (DELETE FROM kombu_message m USING kombu_queue q WHERE m.queue_id = q.id AND m.visible "
    "AND q.name IN (SELECT queue FROM orphaned) RETURNING m.id), "
    "expired AS (DELETE FROM kombu_message m USING kombu_queue q, kombu_binding b WHERE m.queue_id = q.id "
    "AND q.name = b.queue AND b.message_ttl IS NOT NULL AND m.visible "
    f"AND m.timestamp < now() AT TIME ZONE 'UTC' - make_interval(secs => b.message_ttl) AND {_LIVE} RETURNING m.id) "
    "SELECT ARRAY(SELECT queue FROM orphaned), (SELECT count(*) FROM purged) + (SELECT count(*) FROM expired)"
)
# A dead queue's own row, once no message refers to it (another statement: a CTE sees the messages still there).
DROP_QUEUES = (
    "DELETE FROM kombu_queue q WHERE q.name = ANY(%s) "
    "AND NOT EXISTS (SELECT 1 FROM kombu_message m WHERE m.queue_id = q.id) "
    "AND NOT EXISTS (SELECT 1 FROM kombu_binding b WHERE b.queue = q.name)"
)

# ready -> gone, for a no-ack consumer: the message is delivered at most once, and nothing is left to ack.
TAKE = (
    "DELETE FROM kombu_message WHERE id = ANY(ARRAY(SELECT id FROM kombu_message WHERE queue_id = %(queue)s "
    "AND visible ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)) RETURNING id, payload"
)


def forget_bindings(exchange: str | None = None) -> None:
    """Make this process read the shared bindings of `exchange` (of every exchange if None) again before use."""
    for key in [key for key in _topic_cache if exchange is None or key[1] == exchange]:
        _topic_cache.pop(key, None)


def prune_bindings(cursor: Any) -> tuple[int, int]:
    """Delete dead sessions' bindings, their queues and messages, and messages past their TTL; (queues, messages)."""
    cursor.execute(PRUNE)
    queues, messages = cursor.fetchone()
    dropped = 0
    if queues:
        cursor.execute(DROP_QUEUES, (list(queues),))
        dropped = cursor.rowcount
    return dropped, int(messages)


def _message_ttl(arguments: dict | None) -> float | None:
    ttl = (arguments or {}).get("x-message-ttl")
    return None if ttl is None else float(ttl) / 1000.0


def _deliver_shared(kind: Any, message: dict, exchange: str, routing_key: str) -> None:
    channel = kind.channel  # kombu's exchange types keep the channel they route for
    for queue in channel._lookup(exchange, routing_key):
        channel._put(queue, message)


class _DirectExchange(DirectExchange):
    def deliver(self, message: dict, exchange: str, routing_key: str, **kwargs: Any) -> None:
        _deliver_shared(self, message, exchange, routing_key)


class _TopicExchange(TopicExchange):
    def deliver(self, message: dict, exchange: str, routing_key: str, **kwargs: Any) -> None:
        _deliver_shared(self, message, exchange, routing_key)


class FanoutChannel(stock.Channel):
    """The fanout/topic/shared-binding half of the transport's channel (see the module docstring)."""

    supports_fanout = True
    _url: str  # the broker URL (set by the transport's Channel)
    options: TransportOptions  # set by the transport's Channel
    # Deliveries to a queue another process made (and may have dropped and made again) survive a stale queue id.
    exchange_types = {**STANDARD_EXCHANGE_TYPES, "direct": _DirectExchange, "topic": _TopicExchange}

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        # queue -> message TTL (s) or None, for queues declared transient (auto-delete, exclusive, expires)
        self._transient: dict[str, float | None] = {}
        # (exchange, routing_key, queue) -> message TTL: what this channel shares (re-bound after a reconnect)
        self._shared: dict[tuple[str, str, str], float | None] = {}
        self._no_ack_queues: set[str] = set()
        super().__init__(connection, **kwargs)

    # Provided by the transport's Channel: statements on the channel's own session.
    def _run(self, statement: str, params: Any = (), *, fetch: bool = False, retry: bool = True) -> Any:
        raise NotImplementedError

    def _run_as_claimer(self, statement: str, params: dict[str, Any]) -> list[tuple]:
        raise NotImplementedError

    def _forget_queue_id(self, queue: str) -> None:
        raise NotImplementedError

    # --- bindings ------------------------------------------------------------------
    def queue_declare(self, queue: str | None = None, passive: bool = False, **kwargs: Any) -> Any:
        arguments = kwargs.get("arguments") or {}
        if queue and (kwargs.get("auto_delete") or kwargs.get("exclusive") or "x-expires" in arguments):
            self._transient[queue] = _message_ttl(arguments)
        return super().queue_declare(queue, passive, **kwargs)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: Any, queue: str) -> None:
        """Share the binding if other processes publish to it: fanout/topic exchanges, transient queues."""
        if self.typeof(exchange).type not in SHARED_EXCHANGE_TYPES and queue not in self._transient:
            return
        key = (exchange, routing_key or "", queue)
        self._shared[key] = self._transient.get(queue)
        # Dead sessions' queues go first: a restarted worker's pidbox queue starts empty, under a new id.
        [(dead_queues, _messages)] = self._run(PRUNE, fetch=True)
        if dead_queues:
            self._run(DROP_QUEUES, (list(dead_queues),))
            for name in dead_queues:
                self._forget_queue_id(name)
        self._bind(key)

    def _bind(self, key: tuple[str, str, str]) -> None:
        exchange, routing_key, queue = key
        params = {"exchange": exchange, "routing_key": routing_key, "queue": queue, "ttl": self._shared[key]}
        self._run_as_claimer(BIND, params)

    def _unbind_all(self) -> None:
        """A closing channel takes its bindings along (its session goes back to the pool and lives on)."""
        for exchange, routing_key, queue in list(self._shared):
            try:
                self._run(UNBIND, (queue, exchange, routing_key), retry=False)
            except psycopg.Error:
                return  # the session is gone, and with it what it owned; the next prune deletes the rows
        self._shared.clear()

    def _forget_shared_state(self) -> None:
        """In a forked child: the parent's bindings and consumers are the parent's (its session owns them)."""
        self._shared.clear()
        self._transient.clear()
        self._no_ack_queues.clear()

    def _rebind(self, connection: psycopg.Connection, backend: tuple[int, Any]) -> None:
        """On a new database session: take over this channel's bindings (the old session's no longer count)."""
        pid, started = backend
        for (exchange, routing_key, queue), ttl in list(self._shared.items()):
            params = {"exchange": exchange, "routing_key": routing_key, "queue": queue, "ttl": ttl}
            connection.execute(BIND, {**params, "pid": pid, "started": started})

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        exchange, routing_key = (*args, "", "")[:2]  # kombu passes (exchange, routing_key, pattern, queue)
        key = (exchange, routing_key or "", queue)
        if self._shared.pop(key, _MISSING) is not _MISSING:
            self._run(UNBIND, (queue, key[0], key[1]))
        self._purge(queue)
        if self._transient.pop(queue, _MISSING) is not _MISSING:
            # Its row goes too, or each `celery inspect` run would leave one reply queue behind.
            self._run(DROP_QUEUES, ([queue],))
            self._forget_queue_id(queue)

    # --- routing -------------------------------------------------------------------
    def _shared_bindings(self, exchange: str, routing_key: str | None) -> list[tuple[str, str]]:
        return [tuple(row) for row in self._run(LOOKUP, {"exchange": exchange, "routing_key": routing_key}, fetch=True)]

    def _topic_bindings(self, exchange: str) -> list[tuple[str, str]]:
        key = (self._url, exchange)
        cached = _topic_cache.get(key)
        if cached is None or cached[0] <= monotonic():
            # The expiry counts from before the read: a NOTIFY that arrives during it is not missed for long.
            # A new binding NOTIFYs (consuming processes forget the cache at once), but a receiver that dies says
            # nothing: the option bounds how long events still go to its queue (the next prune deletes them).
            expires = monotonic() + self.options.binding_cache_seconds
            cached = _topic_cache[key] = (expires, self._shared_bindings(exchange, None))
        return cached[1]

    def _local_lookup(self, exchange: str, routing_key: str) -> set[str]:
        try:
            return set(self.typeof(exchange).lookup(self.get_table(exchange), exchange, routing_key, None))
        except KeyError:
            return set()

    def _lookup(self, exchange: str, routing_key: str, default: Any = None) -> list[str]:
        if not exchange:
            return list(super()._lookup(exchange, routing_key, default))
        kind = self.typeof(exchange)
        queues = self._local_lookup(exchange, routing_key)
        if kind.type == "topic":
            for key, queue in self._topic_bindings(exchange):
                if kind._match(kind.key_to_pattern(key), routing_key):  # type: ignore[attr-defined]
                    queues.add(queue)
        elif kind.type == "direct" and not queues:
            queues.update(queue for _, queue in self._shared_bindings(exchange, routing_key))
        if not queues and default is not None:
            queues.add(default)
        return sorted(queues)

    def _put_fanout(self, exchange: str, message: dict, routing_key: str, **kwargs: Any) -> None:
        """One message row per queue bound to `exchange` (here or in any live process)."""
        queues = {queue for _, queue in self._shared_bindings(exchange, None)}
        queues.update(self._local_lookup(exchange, routing_key))
        for queue in sorted(queues):
            self._put(queue, message)

    # --- no-ack consumers ------------------------------------------------------------
    def basic_consume(self, queue: str, no_ack: bool, callback: Any, consumer_tag: str | None, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> None:
        queue = self._tag_to_queue.get(consumer_tag)
        super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._tag_to_queue.values():
            self._no_ack_queues.discard(queue)

    def _take(self, queue_id: int, limit: int) -> list[tuple[int, str]]:
        """Delete and return up to `limit` ready rows of a no-ack queue (oldest first)."""
        return sorted(self._run(TAKE, {"queue": queue_id, "limit": limit}, fetch=True))
