"""Wake-ups for this process's publishes, sent by one thread, off every producer's commit path.

A transaction that issued NOTIFY holds a database-wide lock through its commit, so notifying commits run
one at a time. A publish therefore only commits its INSERT and marks its queue here; one thread per process
(and database) sends the NOTIFYs for every queue marked since its last send, in one statement, at most
once per MIN_GAP. The marks of a burst of publishes coalesce into one NOTIFY per queue, and no producer
waits for one. If a
wake-up cannot be sent (or the process dies first), the message is committed anyway and consumers find it
at their next fallback poll.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from time import monotonic

import psycopg

from common.broker import sql

logger = logging.getLogger(__name__)

# The least time between two sends of one waker: a lone publish is notified at once, a burst's publishes
# gather into one NOTIFY per queue at most this often (a wake-up waits at most this long for its turn).
MIN_GAP = 0.005


class Waker:
    """Sends kombu_message_wake() for the queues marked by wake(), from a thread of its own."""

    def __init__(self, connect: Callable[[], psycopg.Connection], *, min_gap: float = MIN_GAP) -> None:
        self._connect = connect
        self._min_gap = min_gap
        self._connection: psycopg.Connection | None = None
        self._marked: set[int] = set()
        self._sending = False
        self._closed = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def wake(self, queue_id: int) -> None:
        """Mark `queue_id` as having news; its NOTIFY is sent as soon as the thread is free (never waits)."""
        with self._changed:
            if self._closed:
                return
            self._marked.add(queue_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._send_forever, name="doorito-broker-waker", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until every marked wake-up was sent (or failed); True if none is left."""
        deadline = monotonic() + timeout
        with self._changed:
            while self._marked or self._sending:
                remaining = deadline - monotonic()
                if remaining <= 0 or self._thread is None:
                    return False
                self._changed.wait(remaining)
        return True

    def close(self) -> None:
        """Stop the thread after its current send and close its connection; later marks are ignored."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._drop_connection()

    def _send_forever(self) -> None:
        sent_at = -self._min_gap
        while True:
            with self._changed:
                while not self._marked and not self._closed:
                    self._changed.wait()
                # A burst's marks gather for what is left of the gap since the last send: one NOTIFY covers them.
                while not self._closed and (pause := sent_at + self._min_gap - monotonic()) > 0:
                    self._changed.wait(pause)
                if self._closed:
                    return
                queues, self._marked = sorted(self._marked), set()
                self._sending = True
            try:
                self._send(queues)
            except Exception as exc:  # committed messages are found at the consumers' next poll
                self._drop_connection()
                logger.info("broker.wake_failed", extra={"event": "broker.wake_failed", "error": str(exc)})
            finally:
                sent_at = monotonic()
                with self._changed:
                    self._sending = False
                    self._changed.notify_all()

    def _send(self, queues: list[int]) -> None:
        for attempt in (1, 2):  # a NOTIFY is idempotent for consumers: a lost session is retried once
            try:
                if self._connection is None:
                    self._connection = self._connect()
                self._connection.execute(sql.WAKE_QUEUES, (queues,))
                return
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self._drop_connection()
                if attempt == 2:
                    raise

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


# One waker per (process, database URL): a forked child never uses its parent's thread or connection. The
# parent's wakers stay referenced in the child (unused), so their connections are never closed from there.
_wakers: dict[tuple[int, str], Waker] = {}
_wakers_lock = threading.Lock()


def waker_for(url: str, connect: Callable[[], psycopg.Connection]) -> Waker:
    """This process's waker for `url` (made on first use with `connect` for its connection)."""
    key = (os.getpid(), url)
    waker = _wakers.get(key)
    if waker is None:
        with _wakers_lock:
            waker = _wakers.get(key)
            if waker is None:
                waker = _wakers[key] = Waker(connect)
    return waker


def close_wakers(*, url: str | None = None) -> None:
    """Close this process's wakers (for `url`, or all), e.g. before dropping the database."""
    pid = os.getpid()
    with _wakers_lock:
        closing = [key for key in _wakers if key[0] == pid and (url is None or key[1] == url)]
        wakers = [_wakers.pop(key) for key in closing]
    for waker in wakers:
        waker.close()


@atexit.register
def _flush_at_exit() -> None:
    # A short-lived process (a management command that publishes and exits) still wakes the consumers.
    for (pid, _url), waker in list(_wakers.items()):
        if pid == os.getpid():
            waker.flush(timeout=2.0)
