"""The SSRF guard sees through IPv6 forms of internal IPv4 addresses, and DNS failures are reported as such."""

from __future__ import annotations

import ipaddress
import socket

import pytest
import requests

from common.outbox.models import DeliveryAttempt
from common.outbox.services.delivery.dispatcher import deliver_due
from common.outbox.services.endpoints import (
    create_endpoint,
)
from common.outbox.services.guarded_http import guarded_session
from common.outbox.services.network_guard import BlockedDestinationError, refusal_reason
from tests.outbox.emitting import emit

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("fec0::1", "site-local"),
        ("2002:a00:1::1", "private (10.0.0.1 via 6to4)"),
        ("2002:7f00:1::1", "loopback (127.0.0.1 via 6to4)"),
        ("2002:a9fe:a9fe::1", "link-local (169.254.169.254 via 6to4)"),
        # Teredo obfuscates the client address (bitwise NOT): f5ff:fffe is 10.0.0.1.
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private (10.0.0.1 via Teredo)"),
        ("64:ff9b::a9fe:a9fe", "link-local (169.254.169.254 via NAT64)"),
        ("64:ff9b::7f00:1", "loopback (127.0.0.1 via NAT64)"),
        ("64:ff9b::a00:1", "private (10.0.0.1 via NAT64)"),
        ("64:ff9b:1::101:101", "local-use NAT64 (64:ff9b:1::/48)"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::10.0.0.1", "private (10.0.0.1 via IPv4-compatible)"),
        ("::127.0.0.1", "loopback (127.0.0.1 via IPv4-compatible)"),
    ],
)
def test_ipv6_forms_that_reach_internal_networks_are_refused(no_allowlist, address, reason):
    assert refusal_reason(address=ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["64:ff9b::101:101", "2002:101:101::1", "::ffff:1.1.1.1"])
def test_ipv6_forms_of_public_ipv4_addresses_pass(no_allowlist, address):
    # DNS64 networks reach public IPv4 hosts through the well-known NAT64 prefix.
    assert refusal_reason(address=ipaddress.ip_address(address)) is None


def test_allowlist_still_opts_ranges_in_but_an_ipv6_range_cannot_open_an_embedded_internal_ipv4(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["10.0.0.0/8", "2002::/16", "64:ff9b::/96", "fec0::/10"]
    assert refusal_reason(address=ipaddress.ip_address("10.1.2.3")) is None
    assert refusal_reason(address=ipaddress.ip_address("fec0::1")) is None
    assert refusal_reason(address=ipaddress.ip_address("2002:a00:1::1")) is None  # 10.0.0.1 is allowed
    assert refusal_reason(address=ipaddress.ip_address("2002:7f00:1::1")) == "loopback (127.0.0.1 via 6to4)"
    assert refusal_reason(address=ipaddress.ip_address("64:ff9b::a9fe:a9fe")).startswith("link-local")
    settings.WEBHOOK_ALLOWED_NETWORKS = ["64:ff9b:1::/48"]
    assert refusal_reason(address=ipaddress.ip_address("64:ff9b:1::101:101")) is None


def test_endpoint_with_a_6to4_literal_of_an_internal_address_is_refused_at_creation(no_allowlist):
    with pytest.raises(BlockedDestinationError, match=r"via 6to4"):
        create_endpoint(url="http://[2002:a9fe:a9fe::1]/latest/meta-data/")


@pytest.fixture
def unresolvable(monkeypatch):
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        if host == "nxdomain.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)


def test_a_dns_failure_is_a_connection_error_not_an_ssrf_refusal(no_allowlist, unresolvable):
    session = guarded_session(pool_size=1)
    with pytest.raises(requests.ConnectionError) as caught:
        session.post("http://nxdomain.example/h", data=b"{}", timeout=(1, 1))
    assert "DNS lookup failed" in str(caught.value) and "Failed to resolve 'nxdomain.example'" in str(caught.value)


def test_a_dns_failure_is_logged_as_such_in_the_attempt(no_allowlist, unresolvable):
    endpoint = create_endpoint(url="http://nxdomain.example/h")
    emit("a")
    deliver_due(limit=10, time_budget=5)
    attempt = DeliveryAttempt.objects.get(delivery__endpoint=endpoint)
    assert "DNS lookup failed" in attempt.error and "SSRF" not in attempt.error
