"""SSRF guard policy: which webhook URLs and addresses are refused, and why.

The policy is enforced where the socket is opened (services/guarded_http.py), so a DNS answer
that changes between a validation and the connect (DNS rebinding) cannot slip through.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings

ALLOWED_SCHEMES = ("http", "https")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedDestinationError(Exception):
    """A webhook URL or one of its resolved addresses is not allowed (SSRF guard)."""


class DestinationResolutionError(OSError):
    """The webhook host's name could not be resolved (a DNS failure, not an SSRF refusal)."""


@lru_cache(maxsize=8)
def _allowed_networks(networks: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


# Prefixes that carry an IPv4 address inside an IPv6 one: a guard that looked only at the IPv6
# flags would let 2002:a00:1:: (6to4 of 10.0.0.1) or 64:ff9b::a9fe:a9fe (NAT64 of the metadata
# address) through, or refuse them with a reason that hides what they point at.
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: the embedding is network-specific
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    if address.teredo is not None:
        return "Teredo", address.teredo[1]  # the client address, de-obfuscated
    if address in _NAT64_WELL_KNOWN:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # :: and ::1 are checked as themselves
        return "IPv4-compatible", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_allowed(address: IPAddress) -> bool:
    networks = _allowed_networks(tuple(settings.WEBHOOK_ALLOWED_NETWORKS))
    return any(address.version == network.version and address in network for network in networks)


def refusal_reason(*, address: IPAddress) -> str | None:
    """Why `address` is refused (e.g. "private"), or None if it may be contacted."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # the kernel connects to the IPv4 address itself
    embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if embedded:
        kind, inner = embedded
        # Checked before the allowlist: allowing an IPv6 range must not open an internal IPv4 one.
        inner_reason = refusal_reason(address=inner)
        if inner_reason:
            return f"{inner_reason} ({inner} via {kind})"
    if _is_allowed(address):
        return None
    if embedded and embedded[0] == "NAT64":
        return None  # the well-known NAT64 prefix translates to the public IPv4 address checked above
    if address in _NAT64_LOCAL_USE:
        return "local-use NAT64 (64:ff9b:1::/48)"
    for reason, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
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
