"""The backlog alarm counts due, claimable work only: backoff to a down receiver is not a stuck dispatcher."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from common.monitoring.services.status import build_status_report
from common.outbox.models import WebhookDelivery
from common.outbox.services.endpoints import (
    create_endpoint,
    disable_endpoint,
)
from common.outbox.services.health import get_outbox_health
from tests.outbox.emitting import emit, lease_delivery

pytestmark = pytest.mark.django_db


def _alarm_codes() -> list[str]:
    return [alarm["code"] for alarm in build_status_report()["alarms"]]


def test_backoff_to_a_down_receiver_is_pending_but_not_due_and_raises_no_backlog_alarm(settings):
    settings.QUEUE_AGE_ALARM = 300
    create_endpoint(url="https://down.example.com/h")
    delivery = emit("a").deliveries.get().pk
    # Ten minutes old, waiting out its backoff until an hour from now.
    WebhookDelivery.objects.filter(pk=delivery).update(
        created_at=timezone.now() - timedelta(minutes=10),
        next_attempt_at=timezone.now() + timedelta(hours=1),
        attempt_count=3,
    )
    health = get_outbox_health()
    assert 590 < health["oldest_pending_age_seconds"] < 700
    assert health["oldest_due_age_seconds"] is None
    assert "OUTBOX_BACKLOG" not in _alarm_codes()


def test_due_work_left_unclaimed_raises_the_backlog_alarm(settings):
    settings.QUEUE_AGE_ALARM = 300
    create_endpoint(url="https://hooks.example.com/h")
    stuck, leased, crashed = (emit(k).deliveries.get().pk for k in ("a", "b", "c"))
    WebhookDelivery.objects.filter(pk=stuck).update(next_attempt_at=timezone.now() - timedelta(minutes=10))
    lease_delivery(leased, seconds=60)  # in flight: not due
    lease_delivery(crashed, seconds=-20 * 60)  # expired 20 min ago: due again, and the oldest
    health = get_outbox_health()
    assert 1190 < health["oldest_due_age_seconds"] < 1300
    alarms = [a for a in build_status_report()["alarms"] if a["code"] == "OUTBOX_BACKLOG"]
    assert len(alarms) == 1 and "not picked up" in alarms[0]["message"]

    out = __import__("io").StringIO()
    call_command("outbox_health", stdout=out)
    assert "oldest due (not yet picked up by a dispatcher): 12" in out.getvalue()


def test_due_deliveries_of_a_disabled_endpoint_do_not_count_as_due():
    endpoint = create_endpoint(url="https://hooks.example.com/h")
    delivery = emit("a").deliveries.get().pk
    lease_delivery(delivery, seconds=60)  # survives the disable as pending
    disable_endpoint(endpoint_id=endpoint.pk, reason="x")
    WebhookDelivery.objects.filter(pk=delivery).update(
        leased_until=timezone.now() - timedelta(minutes=10), next_attempt_at=timezone.now() - timedelta(minutes=10)
    )
    assert get_outbox_health()["oldest_due_age_seconds"] is None
