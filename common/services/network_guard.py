"""SSRF guard: refuse webhook URLs and connections that reach internal networks.

The check runs where the socket is opened: every address the host resolves to is checked and
the connection goes to exactly the address that was checked, so a DNS answer that changes
between a validation and the connect (DNS rebinding) cannot slip through.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.connection import _set_socket_options

ALLOWED_SCHEMES = ("http", "https")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedDestinationError(Exception):
    """A webhook URL or one of its resolved addresses is not allowed (SSRF guard)."""


@lru_cache(maxsize=8)
def _allowed_networks(networks: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def refusal_reason(*, address: IPAddress) -> str | None:
    """Why `address` is refused (e.g. "private"), or None if it may be contacted."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    for network in _allowed_networks(tuple(settings.WEBHOOK_ALLOWED_NETWORKS)):
        if address.version == network.version and address in network:
            return None
    for reason, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    ):
        if flag:
            return reason
    if not address.is_global:  # e.g. CGNAT 100.64.0.0/10, which is neither private nor global
        return "not globally routable"
    return None


def check_url(*, url: str) -> None:
    """Raise BlockedDestinationError unless `url` is http(s) with a host; a literal IP must be allowed too."""
    parts = urlsplit(url)
    if parts.scheme not in ALLOWED_SCHEMES:
        raise BlockedDestinationError(f"refused {url!r}: only http and https URLs are allowed")
    if not parts.hostname:
        raise BlockedDestinationError(f"refused {url!r}: no host")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return  # a name: checked when it is resolved, at connect time
    reason = refusal_reason(address=address)
    if reason:
        raise BlockedDestinationError(f"refused {url!r}: {address} is a {reason} address")


def _guarded_socket(conn: HTTPConnection) -> socket.socket:
    host = conn._dns_host
    try:
        infos = socket.getaddrinfo(host, conn.port, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BlockedDestinationError(f"could not resolve {host!r}: {exc}") from None
    # Refuse if ANY answer is internal: trying only the public ones would still let an attacker
    # steer us by ordering, and a mixed answer is a red flag on its own.
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        reason = refusal_reason(address=address)
        if reason:
            raise BlockedDestinationError(
                f"refused connection to {host!r}: it resolves to {address}, a {reason} address "
                "(allow it with WEBHOOK_ALLOWED_NETWORKS)"
            )
    last_error: OSError | None = None
    for family, socktype, proto, _, sockaddr in infos:
        sock = socket.socket(family, socktype, proto)
        try:
            _set_socket_options(sock, conn.socket_options)
            if conn.timeout is not None:
                sock.settimeout(conn.timeout)
            sock.connect(sockaddr)  # exactly the address checked above; no second lookup
            return sock
        except OSError as exc:
            last_error = exc
            sock.close()
    raise last_error or OSError(f"no address for {host!r}")


class _GuardedMixin:
    def _new_conn(self) -> socket.socket:
        try:
            return _guarded_socket(self)
        except BlockedDestinationError:
            raise
        except TimeoutError as exc:
            from urllib3.exceptions import ConnectTimeoutError

            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out: {exc}") from exc
        except OSError as exc:
            from urllib3.exceptions import NewConnectionError

            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc


class GuardedHTTPConnection(_GuardedMixin, HTTPConnection):
    pass


class GuardedHTTPSConnection(_GuardedMixin, HTTPSConnection):
    pass


class GuardedHTTPAdapter(HTTPAdapter):
    """An HTTPAdapter whose connection pools open sockets only through the SSRF guard."""

    def init_poolmanager(self, *args, **kwargs):
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
