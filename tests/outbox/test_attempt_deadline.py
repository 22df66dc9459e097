"""One attempt has a total deadline: a trickling receiver or a hanging DNS lookup cannot outlive the lease."""

from __future__ import annotations

import pytest

from common.outbox.models import DeliveryAttempt, DeliveryStatus, WebhookDelivery
from common.outbox.services.delivery import dispatcher as delivery
from common.outbox.services.delivery.dispatcher import deliver_due
from common.outbox.services.delivery.send import send
from common.outbox.services.endpoints import create_endpoint
from tests.outbox.emitting import emit

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def test_a_receiver_trickling_its_headers_is_cut_off_at_the_total_deadline(receiver, settings):
    # Each byte comes well inside the read timeout, so only a wall-clock deadline can stop it; without
    # one the attempt lasts 30 x 0.3 = 9 s, far past connect + read = 1.5 s (and past a lease of 3 s).
    settings.WEBHOOK_CONNECT_TIMEOUT, settings.WEBHOOK_READ_TIMEOUT = 0.5, 1.0
    settings.OUTBOX_LEASE_SECONDS = 3
    endpoint = create_endpoint(url=receiver.plan("/trickle", [("trickle", 0.3, 30)]))
    emit()

    result = deliver_due(limit=10, time_budget=5)

    assert result["failed"] == 1
    attempt = DeliveryAttempt.objects.get(delivery__endpoint=endpoint)
    assert attempt.status_code is None
    assert attempt.error.startswith("timeout: the attempt exceeded its total deadline of 1.5s"), attempt.error
    # Cut at the deadline, not when the receiver gave up: recorded well inside the lease.
    assert attempt.duration_ms < 2500, attempt.duration_ms
    assert WebhookDelivery.objects.get(endpoint=endpoint).status == DeliveryStatus.PENDING


def test_a_dns_lookup_that_hangs_is_bounded_by_the_deadline(monkeypatch, settings):
    import socket
    import time

    settings.WEBHOOK_CONNECT_TIMEOUT, settings.WEBHOOK_READ_TIMEOUT = 0.5, 0.5
    real = socket.getaddrinfo

    def slow_resolver(host, *args, **kwargs):
        if host == "slow-dns.example":
            time.sleep(4)  # a resolver that never answers in time
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_resolver)
    claimed = delivery.ClaimedDelivery(
        id=0,
        lease_token=None,
        endpoint_id=0,
        url="http://slow-dns.example/hook",
        secrets=("whsec_" + "A" * 32,),
        msg_id="msg_x",
        body=b"{}",
    )
    session, _ = delivery._session_and_executor()

    outcome = send(session=session, claimed=claimed)

    assert outcome.status_code is None
    assert "DNS lookup of 'slow-dns.example' took longer than" in outcome.error, outcome.error
    assert outcome.duration_ms < 2000, outcome.duration_ms
