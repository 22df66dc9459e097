"""Outbox admin actions: who may run them, and a test event to a disabled endpoint."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from common.outbox.models import OutboxEvent, WebhookDelivery
from common.outbox.services.emit import send_test_event
from common.outbox.services.endpoints import (
    create_endpoint,
    disable_endpoint,
    reenable_endpoint,
)
from tests.outbox.emitting import emit

pytestmark = pytest.mark.django_db


def staff_client(*codenames: str) -> Client:
    user = User.objects.create_user(username=f"staff-{uuid.uuid4().hex[:8]}", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="common", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def run_action(client: Client, action: str, ids, model: str = "webhookendpoint"):
    return client.post(f"/admin/common/{model}/", {"action": action, "_selected_action": list(ids)}, follow=True)


ENDPOINT_ACTIONS = ["rotate_secret_action", "send_test_event_action", "reenable_action", "disable_action"]
DELIVERY_ACTIONS = ["retry_now_action", "replay_action"]


def test_view_only_staff_cannot_run_any_outbox_admin_action():
    endpoint = create_endpoint(url="https://hooks.example.com/h")
    emit("k1")
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed")
    client = staff_client("view_webhookendpoint", "view_webhookdelivery")

    page = client.get("/admin/common/webhookendpoint/")
    assert page.status_code == 200  # they may look...
    for action in ENDPOINT_ACTIONS:
        assert f'value="{action}"'.encode() not in page.content  # ...but are offered no action
    deliveries_page = client.get("/admin/common/webhookdelivery/")
    assert deliveries_page.status_code == 200
    for action in DELIVERY_ACTIONS:
        assert f'value="{action}"'.encode() not in deliveries_page.content

    secret = endpoint.secret
    for action in ENDPOINT_ACTIONS:  # posting the action anyway does nothing
        assert run_action(client, action, [endpoint.pk]).status_code == 200
    for action in DELIVERY_ACTIONS:
        run_action(client, action, [delivery.pk], model="webhookdelivery")

    endpoint.refresh_from_db()
    assert endpoint.secret == secret and endpoint.previous_secret == ""  # not rotated
    assert endpoint.is_active  # not disabled
    assert OutboxEvent.objects.count() == 1  # no test event
    assert WebhookDelivery.objects.get().status == "failed"  # not replayed


def test_staff_with_change_permissions_can_run_the_actions():
    endpoint = create_endpoint(url="https://hooks.example.com/h")
    emit("k1")
    WebhookDelivery.objects.update(status="failed")
    client = staff_client(
        "view_webhookendpoint", "change_webhookendpoint", "view_webhookdelivery", "change_webhookdelivery"
    )
    old_secret = endpoint.secret
    response = run_action(client, "rotate_secret_action", [endpoint.pk])
    endpoint.refresh_from_db()
    assert endpoint.secret != old_secret and endpoint.secret in response.content.decode()
    run_action(client, "replay_action", [WebhookDelivery.objects.get().pk], model="webhookdelivery")
    assert WebhookDelivery.objects.get().status == "pending"


def test_send_test_event_to_a_disabled_endpoint_is_refused_clearly(admin_client):
    endpoint = create_endpoint(url="https://hooks.example.com/h")
    disable_endpoint(endpoint_id=endpoint.pk, reason="410 from receiver")
    with pytest.raises(ValueError, match=r"is disabled \(410 from receiver\); re-enable it first"):
        send_test_event(endpoint_id=endpoint.pk)

    response = run_action(admin_client, "send_test_event_action", [endpoint.pk])
    text = response.content.decode()
    assert "Not sent" in text and "re-enable it first" in text and "Queued" not in text
    assert OutboxEvent.objects.count() == 0 and WebhookDelivery.objects.count() == 0

    reenable_endpoint(endpoint_id=endpoint.pk)
    response = run_action(admin_client, "send_test_event_action", [endpoint.pk])
    assert "Queued a webhook.test event to 1 endpoint(s)" in response.content.decode()
    assert WebhookDelivery.objects.get().endpoint_id == endpoint.pk
