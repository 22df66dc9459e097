"""SSRF guard: refused at connect time with a clear error in the attempt log; allowlist opts back in."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from django.test import override_settings

from common.outbox.models import DeliveryAttempt, WebhookDelivery
from common.outbox.services.delivery.dispatcher import deliver_due
from common.outbox.services.endpoints import create_endpoint
from common.outbox.services.network_guard import BlockedDestinationError, check_url, refusal_reason
from tests.outbox.emitting import emit

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("100.64.0.1", "not globally routable"),  # CGNAT
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:10.0.0.1", "private"),  # IPv4-mapped IPv6 hides an IPv4 address
    ],
)
def test_internal_addresses_are_refused(no_allowlist, address, reason):
    assert refusal_reason(address=ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(no_allowlist, address):
    assert refusal_reason(address=ipaddress.ip_address(address)) is None


def test_allowlist_opts_a_range_back_in(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert refusal_reason(address=ipaddress.ip_address("10.9.9.9")) is None
    assert refusal_reason(address=ipaddress.ip_address("192.168.0.1")) == "private"


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://x", "http:///nohost"])
def test_only_http_and_https_with_a_host(url):
    with pytest.raises(BlockedDestinationError):
        check_url(url=url)


def test_endpoint_with_a_literal_internal_address_is_refused_at_creation(no_allowlist):
    with pytest.raises(BlockedDestinationError, match=r"169\.254\.169\.254 is a link-local"):
        create_endpoint(url="http://169.254.169.254/latest/meta-data/")


def test_hostname_resolving_to_loopback_is_refused_at_connect_with_the_reason_logged(no_allowlist, receiver):
    # Registered while the name was allowed (DNS and allowlists change); the real resolver answers
    # 127.0.0.1 at connect time, when loopback is refused.
    url = receiver.plan("/ok", [200]).replace("127.0.0.1", "localhost")
    with override_settings(WEBHOOK_ALLOWED_NETWORKS=["127.0.0.0/8"]):
        endpoint = create_endpoint(url=url)
    emit("k", aggregate_id="1", payload={})
    deliver_due(limit=10, time_budget=5)
    assert receiver.received() == []
    attempt = DeliveryAttempt.objects.get(delivery__endpoint=endpoint)
    assert attempt.status_code is None and not attempt.succeeded
    assert "SSRF guard" in attempt.error and "loopback" in attempt.error and "'localhost'" in attempt.error


def test_dns_rebinding_is_caught_at_connect_time(no_allowlist, monkeypatch):
    # The name looked public when the endpoint was registered; at send time DNS answers a private address.
    endpoint = create_endpoint(url="http://hooks.rebind.test/x")
    real = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host == "hooks.rebind.test":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 80)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 80)),
            ]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    emit("k", aggregate_id="1", payload={})
    deliver_due(limit=10, time_budget=5)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == "pending" and "10.0.0.7, a private address" in delivery.last_error


def test_loopback_receiver_works_when_allowed(receiver):
    # Test (and Dev) allow 127.0.0.0/8 by default so local receivers work.
    create_endpoint(url=receiver.plan("/ok", [200]))
    emit("k", aggregate_id="1", payload={})
    assert deliver_due(limit=10, time_budget=5)["delivered"] == 1
