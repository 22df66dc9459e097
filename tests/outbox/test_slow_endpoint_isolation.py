"""A slow endpoint holds one thread, never the healthy deliveries claimed with it."""

from __future__ import annotations

import pytest
from django.db import transaction

from common.outbox.models import DeliveryStatus, WebhookDelivery
from common.outbox.services.delivery.dispatcher import deliver_due
from common.outbox.services.endpoints import create_endpoint
from tests.outbox.emitting import emit

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.mark.django_db(transaction=True)  # the watcher thread reads what the dispatcher committed
def test_a_hanging_endpoint_does_not_hold_back_healthy_deliveries(receiver, settings, clean_broker):
    # clean_broker: the nudges wait in the broker, so this test's own dispatcher does the delivering.
    import threading
    import time

    settings.OUTBOX_DELIVERY_CONCURRENCY, settings.OUTBOX_CLAIM_ROUNDS = 4, 2
    settings.WEBHOOK_CONNECT_TIMEOUT, settings.WEBHOOK_READ_TIMEOUT, settings.OUTBOX_LEASE_SECONDS = 1.0, 10.0, 30
    hanging = create_endpoint(url=receiver.plan("/hang", ["hold"]), event_types=["slow.*"])
    healthy = create_endpoint(url=receiver.plan("/ok", [200]), event_types=["file.*"])
    with transaction.atomic():
        emit(key="slow", event_type="slow.event")  # due first: it is in the very first claim
        for i in range(40):
            emit(key=f"k{i}")
    seen = {}

    def watch():
        # While the hanging request is still open, wait (up to 8 s of its 10 s read timeout) for the
        # 40 healthy deliveries to be received AND recorded, then let it answer.
        from django.db import connection as thread_connection

        try:
            assert receiver.held.wait(5)
            until = time.monotonic() + 8
            while time.monotonic() < until:
                received = len(receiver.received("/ok"))
                delivered = WebhookDelivery.objects.filter(endpoint=healthy, status=DeliveryStatus.DELIVERED).count()
                if received == delivered == 40:
                    break
                time.sleep(0.05)
            seen.update(received=received, delivered=delivered, hang_open=not receiver.released.is_set())
        finally:
            receiver.release()
            thread_connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    result = deliver_due(limit=100, time_budget=15)
    watcher.join()

    assert seen == {"received": 40, "delivered": 40, "hang_open": True}
    assert result["delivered"] == 41
    assert WebhookDelivery.objects.get(endpoint=hanging).status == DeliveryStatus.DELIVERED
