"""Operators: admin actions, management commands, health, cleanup, tasks' return formats."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from common.outbox.models import DeliveryAttempt, OutboxEvent, WebhookDelivery, WebhookEndpoint
from common.outbox.services.delivery.dispatcher import deliver_due
from common.outbox.services.endpoints import create_endpoint, disable_endpoint
from common.outbox.services.health import get_outbox_health
from common.outbox.tasks import cleanup_delivered_outbox_events_task
from tests.outbox.emitting import emit

pytestmark = pytest.mark.django_db


def test_health_counts_statuses_oldest_pending_and_failing_endpoints():
    ok = create_endpoint(url="https://ok.example.com/h")
    bad = create_endpoint(url="https://bad.example.com/h")
    for i in range(3):
        emit(f"k{i}")
    WebhookDelivery.objects.filter(endpoint=ok).update(status="delivered")
    WebhookDelivery.objects.filter(endpoint=bad).update(created_at=timezone.now() - timedelta(minutes=10))
    WebhookEndpoint.objects.filter(pk=bad.pk).update(failing_since=timezone.now())

    health = get_outbox_health()

    assert health["deliveries"] == {"pending": 3, "delivered": 3, "failed": 0}
    assert health["due"] == 3 and health["in_flight"] == 0
    assert 590 < health["oldest_pending_age_seconds"] < 700
    [failing] = health["failing_endpoints"]
    assert failing["id"] == bad.id and failing["pending"] == 3 and failing["is_active"]

    out = StringIO()
    call_command("outbox_health", stdout=out)
    assert "pending 3" in out.getvalue() and "bad.example.com" in out.getvalue()
    out = StringIO()
    call_command("outbox_health", "--json", stdout=out)
    assert json.loads(out.getvalue())["deliveries"]["delivered"] == 3


def test_cleanup_deletes_only_settled_events_past_retention(settings):
    settings.OUTBOX_RETENTION_HOURS = 1
    endpoint = create_endpoint(url="https://ok.example.com/h", event_types=["file.*"])
    old_done, old_pending, new_done = emit("a"), emit("b"), emit("c")
    old_no_endpoint = emit("d", event_type="nobody.listens")
    WebhookDelivery.objects.filter(event__in=[old_done, new_done]).update(status="delivered")
    d = WebhookDelivery.objects.get(event=old_done)
    DeliveryAttempt.objects.create(delivery=d, attempted_at=timezone.now(), duration_ms=1, status_code=200)
    OutboxEvent.objects.filter(pk__in=[old_done.pk, old_pending.pk, old_no_endpoint.pk]).update(
        created_at=timezone.now() - timedelta(hours=2)
    )

    assert cleanup_delivered_outbox_events_task.apply().get() == {"deleted": 2, "remaining": 0}

    assert set(OutboxEvent.objects.values_list("pk", flat=True)) == {old_pending.pk, new_done.pk}
    assert not DeliveryAttempt.objects.exists()
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 2


def test_replay_command_replays_failed_deliveries_in_the_window():
    endpoint = create_endpoint(url="https://ok.example.com/h")
    recent, old = emit("recent"), emit("old")
    OutboxEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    WebhookDelivery.objects.update(status="failed", attempt_count=8)

    out = StringIO()
    call_command("outbox_replay", str(endpoint.id), "--hours", "24", stdout=out)

    assert "replaying 1 failed" in out.getvalue()
    assert WebhookDelivery.objects.get(event=recent).status == "pending"
    assert WebhookDelivery.objects.get(event=recent).attempt_count == 0
    assert WebhookDelivery.objects.get(event=old).status == "failed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["999999", "--hours", "1"], "no webhook endpoint"),
        (["{id}", "--since", "yesterday"], "not an ISO 8601"),
        (["{id}", "--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"], "must be after"),
        (["{id}", "--hours", "-1"], "must be positive"),
    ],
)
def test_replay_command_rejects_bad_input_clearly(args, message):
    endpoint = create_endpoint(url="https://ok.example.com/h")
    with pytest.raises(CommandError, match=message):
        call_command("outbox_replay", *[a.format(id=endpoint.id) for a in args])


def test_replay_command_refuses_a_disabled_endpoint():
    endpoint = create_endpoint(url="https://ok.example.com/h")
    disable_endpoint(endpoint_id=endpoint.id, reason="410")
    with pytest.raises(CommandError, match="re-enable it first"):
        call_command("outbox_replay", str(endpoint.id), "--hours", "1")


def test_admin_endpoint_lifecycle_through_services(admin_client, receiver):
    response = admin_client.post(
        "/admin/common/webhookendpoint/add/",
        {"url": receiver.plan("/ok", [200]), "description": "x", "event_types": '["file.*"]'},
        follow=True,
    )
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret.startswith("whsec_")
    assert endpoint.secret in response.content.decode()  # shown once, on creation
    page = admin_client.get(f"/admin/common/webhookendpoint/{endpoint.pk}/change/").content.decode()
    assert endpoint.secret not in page and endpoint.masked_secret in page

    bad = admin_client.post(
        "/admin/common/webhookendpoint/add/", {"url": "ftp://x.example.com", "event_types": '["File!"]'}
    )
    assert b"only http and https" in bad.content and b"invalid event type pattern" in bad.content

    def act(action, model="webhookendpoint", ids=(endpoint.pk,)):
        return admin_client.post(
            f"/admin/common/{model}/", {"action": action, "_selected_action": list(ids)}, follow=True
        )

    old_secret = endpoint.secret
    act("rotate_secret_action")
    endpoint.refresh_from_db()
    assert endpoint.secret != old_secret and endpoint.previous_secret == old_secret

    act("send_test_event_action")
    assert deliver_due(limit=10, time_budget=5)["delivered"] == 1
    assert json.loads(receiver.received("/ok")[0]["body"])["type"] == "webhook.test"

    act("disable_action")
    act("reenable_action")
    endpoint.refresh_from_db()
    assert endpoint.is_active and endpoint.disabled_reason == ""

    delivery = WebhookDelivery.objects.get()
    act("replay_action", model="webhookdelivery", ids=[delivery.pk])
    assert WebhookDelivery.objects.get().status == "pending"
    deliver_due(limit=10, time_budget=5)
    assert len(receiver.received("/ok")) == 2

    attempt = DeliveryAttempt.objects.first()
    assert admin_client.get(f"/admin/common/deliveryattempt/{attempt.pk}/change/").status_code == 200
    assert admin_client.post(f"/admin/common/deliveryattempt/{attempt.pk}/delete/").status_code == 403
    event = OutboxEvent.objects.get()
    assert b"webhook.test" in admin_client.get(f"/admin/common/outboxevent/{event.pk}/change/").content
