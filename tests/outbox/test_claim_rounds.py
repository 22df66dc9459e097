"""A claim leases several requests per HTTP thread; a request that could outlive its lease is never started."""

from __future__ import annotations

import pytest

from common.outbox.models import DeliveryAttempt, WebhookDelivery
from common.outbox.services.delivery.dispatcher import deliver_due, latest_start
from common.outbox.services.endpoints import create_endpoint
from tests.outbox.emitting import emit_many

pytestmark = pytest.mark.django_db


def test_one_claim_sends_several_rounds_per_thread(receiver, settings):
    settings.OUTBOX_DELIVERY_CONCURRENCY = 2
    settings.OUTBOX_CLAIM_ROUNDS = 3
    create_endpoint(url=receiver.plan("/hook", [200]))
    emit_many(7)

    result = deliver_due(limit=100, time_budget=30)

    assert result == {"processed": 7, "delivered": 7, "failed": 0, "remaining": 0}
    assert len(receiver.received("/hook")) == 7
    assert WebhookDelivery.objects.filter(status="delivered", lease_token__isnull=True).count() == 7


def test_latest_start_leaves_a_full_timeout_and_recording_time_inside_the_lease_and_respects_the_budget(settings):
    settings.WEBHOOK_CONNECT_TIMEOUT, settings.WEBHOOK_READ_TIMEOUT, settings.OUTBOX_LEASE_SECONDS = 5.0, 15.0, 60
    # (60 - 20) / 2 = 20 s after the claim: the request ends by 40 s, 20 s before the lease does.
    assert latest_start(claimed_at=100.0, run_deadline=1000.0) == 120.0
    assert latest_start(claimed_at=100.0, run_deadline=110.0) == 110.0


def test_claimed_delivery_that_cannot_start_in_time_is_released_unsent(receiver, settings):
    # Lease 3 s, connect + read 2 s: a request must start within (3 - 2) / 2 = 0.5 s of the claim.
    settings.WEBHOOK_CONNECT_TIMEOUT, settings.WEBHOOK_READ_TIMEOUT, settings.OUTBOX_LEASE_SECONDS = 1.0, 1.0, 3
    settings.OUTBOX_DELIVERY_CONCURRENCY = 1
    settings.OUTBOX_CLAIM_ROUNDS = 3
    create_endpoint(url=receiver.plan("/slow", [("hang", 0.8)]))
    emit_many(3)

    # One claim of 3 (the budget ends before a second claim); the first request takes 0.8 s, so the
    # next two would start after the 0.5 s window.
    first = deliver_due(limit=100, time_budget=0.6)

    assert first == {"processed": 1, "delivered": 1, "failed": 0, "remaining": 2}
    assert len(receiver.received("/slow")) == 1
    waiting = WebhookDelivery.objects.filter(status="pending")
    assert waiting.count() == 2
    assert all(d.lease_token is None and d.leased_until is None and d.attempt_count == 0 for d in waiting)
    assert DeliveryAttempt.objects.count() == 1  # nothing is recorded for a request never sent

    deliver_due(limit=100, time_budget=5)
    deliver_due(limit=100, time_budget=5)
    assert WebhookDelivery.objects.filter(status="delivered").count() == 3
    assert len(receiver.received("/slow")) == 3
