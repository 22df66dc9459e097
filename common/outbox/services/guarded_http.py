"""Guarded HTTP for webhook attempts: a wall-clock deadline per attempt, and connections that go only
to addresses the SSRF guard allows.

Every address the host resolves to is checked where the socket is opened, and the connection goes
to exactly the address that was checked, so a DNS answer that changes between a validation and the
connect (DNS rebinding) cannot slip through.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import _set_socket_options

from common.outbox.services.network_guard import BlockedDestinationError, DestinationResolutionError, refusal_reason


class AttemptDeadline:
    """A wall-clock limit for one HTTP attempt: when it passes, the attempt's sockets are shut down."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def finish(self) -> None:
        # Before the connection goes back to the pool: a later expiry must not hit its next user.
        with self._lock:
            self._done = True
            self._sockets.clear()

    def expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    # shutdown (not close) wakes a thread blocked in recv/connect on this socket at once.
    with contextlib.suppress(OSError):  # not connected yet, or already closed
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    # One thread per process expires the deadlines of attempts in progress, checking ten times a
    # second: a Timer per request would start a thread per request, and a heap under a condition
    # costs more per request than this dict (adding and removing are single atomic dict operations).
    def __init__(self) -> None:
        self._active: dict[int, AttemptDeadline] = {}
        self._pid: int | None = None
        self._lock = threading.Lock()

    def add(self, deadline: AttemptDeadline) -> None:
        if self._pid != os.getpid():  # first use in this (possibly forked) process
            with self._lock:
                if self._pid != os.getpid():
                    self._active = {}
                    threading.Thread(target=self._run, name="webhook-deadlines", daemon=True).start()
                    self._pid = os.getpid()
        self._active[id(deadline)] = deadline

    def remove(self, deadline: AttemptDeadline) -> None:
        self._active.pop(id(deadline), None)

    def _run(self) -> None:
        while True:
            time.sleep(0.1)
            now = time.monotonic()
            for deadline in list(self._active.values()):
                if deadline.at <= now:
                    deadline.expire()


_watchdog = _Watchdog()
_current = threading.local()


@contextmanager
def attempt_deadline(*, seconds: float) -> Iterator[AttemptDeadline]:
    """Bound everything this thread's guarded connections do inside the block (DNS, connect, send, read)."""
    deadline = AttemptDeadline(seconds)
    _watchdog.add(deadline)
    _current.deadline = deadline
    try:
        yield deadline
    finally:
        _current.deadline = None
        deadline.finish()
        _watchdog.remove(deadline)


def _current_deadline() -> AttemptDeadline | None:
    return getattr(_current, "deadline", None)


_resolvers: dict[str, Any] = {"pid": None, "pool": None}
_resolvers_lock = threading.Lock()


def _resolve(host: str, port: int, timeout: float | None) -> list:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)  # a literal: nothing to look up
    if timeout is None:
        return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    # getaddrinfo has no timeout: run it in a small pool and stop waiting for it (the lookup itself
    # finishes in the background, bounded by the resolver's own retries).
    with _resolvers_lock:
        if _resolvers["pid"] != os.getpid():
            _resolvers.update(pid=os.getpid(), pool=ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns"))
        future = _resolvers["pool"].submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        return future.result(timeout=max(0.0, timeout))
    except FutureTimeoutError:
        raise DestinationResolutionError(f"DNS lookup of {host!r} took longer than {timeout:.3g}s") from None


def _refuse_internal_answers(*, host: str, infos: list, action: str) -> None:
    # Refuse if ANY answer is internal: trying only the public ones would still let an attacker
    # steer us by ordering, and a mixed answer is a red flag on its own.
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        reason = refusal_reason(address=address)
        if reason:
            raise BlockedDestinationError(
                f"refused {action} {host!r}: it resolves to {address}, a {reason} address "
                "(allow it with WEBHOOK_ALLOWED_NETWORKS)"
            )


def check_resolved_url(*, url: str) -> None:
    """Raise BlockedDestinationError if the URL's host name resolves now to a refused address.

    A name that does not resolve (yet) passes: DNS may be set up after the endpoint, and the
    connect-time check (which also catches later DNS changes) stays the guard that counts.
    """
    parts = urlsplit(url)
    if not parts.hostname:
        return
    try:
        infos = _resolve(parts.hostname, parts.port or 443, settings.WEBHOOK_CONNECT_TIMEOUT)
    except (OSError, ValueError):  # gaierror, DestinationResolutionError, a bad port
        return
    _refuse_internal_answers(host=parts.hostname, infos=infos, action="webhook URL host")


def _guarded_socket(conn: HTTPConnection) -> socket.socket:
    host = conn._dns_host
    deadline = _current_deadline()
    timeout = conn.timeout if isinstance(conn.timeout, int | float) else None
    if deadline is not None:
        timeout = min(timeout, deadline.remaining()) if timeout is not None else deadline.remaining()
        if timeout <= 0:
            raise TimeoutError("the attempt's total deadline passed before connecting")
    try:
        infos = _resolve(host, conn.port, timeout)
    except socket.gaierror as exc:
        raise DestinationResolutionError(f"DNS lookup failed: {exc}") from None
    _refuse_internal_answers(host=host, infos=infos, action="connection to")
    last_error: OSError | None = None
    for family, socktype, proto, _, sockaddr in infos:
        sock = socket.socket(family, socktype, proto)
        try:
            _set_socket_options(sock, conn.socket_options)
            if deadline is not None:
                deadline.watch(sock)
                remaining = deadline.remaining()
                sock.settimeout(max(0.001, remaining if timeout is None else min(timeout, remaining)))
            elif conn.timeout is not None:
                sock.settimeout(conn.timeout)
            sock.connect(sockaddr)  # exactly the address checked above; no second lookup
            return sock
        except OSError as exc:
            last_error = exc
            sock.close()
    raise last_error or OSError(f"no address for {host!r}")


class _GuardedMixin(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        # A reused keep-alive connection's socket is put under the current attempt's deadline too.
        deadline = _current_deadline()
        if deadline is not None and self.sock is not None:
            deadline.watch(self.sock)
        return super().request(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        try:
            return _guarded_socket(self)
        except BlockedDestinationError:
            raise
        except DestinationResolutionError as exc:
            raise NameResolutionError(self.host, self, socket.gaierror(str(exc))) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out: {exc}") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc


class GuardedHTTPConnection(_GuardedMixin, HTTPConnection):
    pass


class GuardedHTTPSConnection(_GuardedMixin, HTTPSConnection):
    pass


class GuardedHTTPAdapter(HTTPAdapter):
    """An HTTPAdapter whose connection pools open sockets only through the SSRF guard."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}
        self.poolmanager.key_fn_by_scheme = dict(self.poolmanager.key_fn_by_scheme)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


def guarded_session(*, pool_size: int) -> requests.Session:
    """Return a Session that reuses connections, ignores proxy variables and connects only through the guard."""
    session = requests.Session()
    session.trust_env = False  # an HTTP(S)_PROXY in the environment would bypass the guard
    adapter = GuardedHTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
