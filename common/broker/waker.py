"""Wake-ups for this process's publishes, sent by one thread, off every producer's commit path.

A transaction that issued NOTIFY holds a database-wide lock through its commit, so notifying commits run
one at a time. A publish therefore only commits its INSERT and, if that INSERT disarmed a consumer's flag
(kombu_queue.wake_wanted_until lies ahead: consumers arm it before they sleep on LISTEN; the first publish
that finds it armed clears it), marks its queue here. While every consumer of a queue is busy, nothing is
marked and no NOTIFY is sent at all: a busy consumer claims again without one. Every consumer asleep on a
queue wakes at its NOTIFY and arms the flag again before it sleeps again, so the publishes in between mark
nothing, in this process or any other. One thread per process sends the NOTIFYs for every
queue marked since its last send, in one statement, at most once per MIN_GAP, on the connection of the
channel that published last (under that channel's lock, so no connection is added). The marks of a burst
of publishes coalesce into one NOTIFY per queue, and no producer waits for one. If a wake-up cannot be
sent (or the process dies first), the message is committed anyway and consumers find it at their next
fallback poll (the flag is cleared already: other producers' publishes do not wake them meanwhile).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable
from time import monotonic

logger = logging.getLogger(__name__)

# The least time between two sends of one waker: a lone publish is notified at once, a burst's publishes
# gather into one NOTIFY per queue at most this often (a wake-up waits at most this long for its turn).
MIN_GAP = 0.005

# Runs sql.WAKE_QUEUES for the given queue ids (a channel's, on its connection).
Sender = Callable[[list[int]], None]


class Waker:
    """Sends the wake-ups of the queues marked by wake(), from a thread of its own."""

    def __init__(self, *, min_gap: float = MIN_GAP) -> None:
        self._min_gap = min_gap
        self._marked: set[int] = set()
        self._send: Sender | None = None
        self._sending = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def wake(self, queue_id: int, send: Sender) -> None:
        """Mark `queue_id` as having news, to be sent with `send` (the latest one given); never waits."""
        with self._changed:
            self._marked.add(queue_id)
            self._send = send
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
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def _send_forever(self) -> None:
        sent_at = -self._min_gap
        while True:
            with self._changed:
                while not self._marked:
                    self._changed.wait()
                # A burst's marks gather for what is left of the gap since the last send: one NOTIFY covers them.
                while (pause := sent_at + self._min_gap - monotonic()) > 0:
                    self._changed.wait(pause)
                queues, self._marked = sorted(self._marked), set()
                send, self._sending = self._send, True
            try:
                assert send is not None  # set with every mark
                send(queues)
            except Exception as exc:  # committed messages are found at the consumers' next poll
                logger.info("broker.wake_failed", extra={"event": "broker.wake_failed", "error": str(exc)})
            finally:
                sent_at = monotonic()
                with self._changed:
                    self._sending = False
                    self._changed.notify_all()


# One waker per process: a forked child never uses its parent's (whose thread it does not have).
_wakers: dict[int, Waker] = {}
_wakers_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    global _wakers_lock
    _wakers_lock = threading.Lock()  # never inherited held by a thread the child does not have


os.register_at_fork(after_in_child=_new_lock_after_fork)


def process_waker() -> Waker:
    """This process's waker (made on first use)."""
    waker = _wakers.get(os.getpid())
    if waker is None:
        with _wakers_lock:
            waker = _wakers.setdefault(os.getpid(), Waker())
    return waker


@atexit.register
def _flush_at_exit() -> None:
    # A short-lived process (a management command that publishes and exits) still wakes the consumers.
    waker = _wakers.get(os.getpid())
    if waker is not None:
        waker.flush(timeout=2.0)
