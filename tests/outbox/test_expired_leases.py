"""A delivery whose lease expired (its dispatcher died) is taken over by disable, retry-now and replay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from common.outbox.models import WebhookDelivery
from common.outbox.services.delivery.dispatcher import deliver_due
from common.outbox.services.endpoints import (
    create_endpoint,
    disable_endpoint,
)
from common.outbox.services.replay import replay_deliveries, retry_now
from tests.outbox.emitting import emit, lease_delivery

pytestmark = pytest.mark.django_db


def test_disable_fails_deliveries_with_an_expired_lease_and_leaves_live_ones():
    endpoint = create_endpoint(url="https://hooks.example.com/h")
    expired, live, free = (emit(k).deliveries.get().pk for k in ("a", "b", "c"))
    lease_delivery(expired, seconds=-30)  # a crashed dispatcher's row
    lease_delivery(live, seconds=60)  # a dispatcher still sending

    assert disable_endpoint(endpoint_id=endpoint.pk, reason="manual") == 2
    rows = {d.pk: d for d in WebhookDelivery.objects.all()}
    assert rows[expired].status == "failed" and rows[expired].lease_token is None
    assert rows[expired].leased_until is None and "endpoint disabled: manual" in rows[expired].last_error
    assert rows[free].status == "failed"
    assert rows[live].status == "pending" and rows[live].lease_token is not None


def test_retry_now_takes_deliveries_with_an_expired_lease_and_leaves_live_ones():
    create_endpoint(url="https://hooks.example.com/h")
    expired, live = (emit(k).deliveries.get().pk for k in ("a", "b"))
    lease_delivery(expired, seconds=-30)
    lease_delivery(live, seconds=60)
    before = timezone.now()

    assert retry_now(delivery_ids=[expired, live]) == 1
    rows = {d.pk: d for d in WebhookDelivery.objects.all()}
    assert rows[expired].lease_token is None and rows[expired].leased_until is None
    assert before <= rows[expired].next_attempt_at <= timezone.now()
    assert rows[live].lease_token is not None and rows[live].next_attempt_at > timezone.now()


def test_retry_now_of_an_expired_lease_is_delivered(receiver):
    create_endpoint(url=receiver.plan("/ok", [200]))
    delivery = emit("a").deliveries.get().pk
    lease_delivery(delivery, seconds=-5)
    WebhookDelivery.objects.filter(pk=delivery).update(next_attempt_at=timezone.now() + timedelta(hours=1))
    assert retry_now(delivery_ids=[delivery]) == 1
    assert deliver_due(limit=10, time_budget=5)["delivered"] == 1
    assert len(receiver.received("/ok")) == 1 and WebhookDelivery.objects.get().status == "delivered"


def test_replay_of_failed_delivery_still_requires_an_active_endpoint():
    endpoint = create_endpoint(url="https://hooks.example.com/h")
    delivery = emit("a").deliveries.get().pk
    disable_endpoint(endpoint_id=endpoint.pk, reason="x")
    assert replay_deliveries(delivery_ids=[delivery]) == 0
