"""Owned webhook endpoints: events reach only their owner's endpoints (and operators'), services refuse strangers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from common.outbox.models import DeliveryStatus, OutboxEvent, WebhookDelivery, WebhookEndpoint
from common.outbox.services.emit import emit_event
from common.outbox.services.endpoints import create_endpoint
from portal.models import UploadFile
from portal.services.events import emit_file_event
from portal.services.own_webhooks import (
    create_owned_endpoint,
    get_owned_endpoint,
    owned_endpoints,
    recent_deliveries,
    replay_owned_delivery,
    replay_owned_since,
    rotate_owned_secret,
    send_owned_test_event,
    set_owned_endpoint_active,
)

pytestmark = pytest.mark.django_db


def stored_file(owner, name: str) -> UploadFile:
    now = timezone.now()
    return UploadFile.objects.create(
        owner=owner,
        original_filename=name,
        storage_name=f"xx/{name}",
        status="stored",
        created_at=now,
        expires_at=now + timedelta(hours=1),
    )


@pytest.fixture
def people(django_user_model):
    alice = django_user_model.objects.create_user(username="alice", password="x")
    bob = django_user_model.objects.create_user(username="bob", password="x")
    return alice, bob


def receivers(event) -> set[int]:
    return set(WebhookDelivery.objects.filter(event=event).values_list("endpoint_id", flat=True))


def test_file_events_reach_the_owners_endpoints_and_operators_never_another_users(people):
    alice, bob = people
    alices = create_owned_endpoint(owner=alice, url="http://127.0.0.1:9/a", event_types=["file.stored"])
    bobs = create_owned_endpoint(owner=bob, url="http://127.0.0.1:9/b", event_types=["file.stored"])
    operator = create_endpoint(url="http://127.0.0.1:9/op")  # no owner: every event, as before
    assert operator.owner is None

    with transaction.atomic():
        about_alice = emit_file_event(event_type="file.stored", upload=stored_file(alice, "a.txt"))
        about_bob = emit_file_event(event_type="file.stored", upload=stored_file(bob, "b.txt"))
        about_nobody = emit_event(
            event_type="file.stored", aggregate_type="other", aggregate_id="1", payload={}, idempotency_key="n"
        )
    assert about_alice.subject_user_id == alice.id
    assert receivers(about_alice) == {alices.id, operator.id}
    assert receivers(about_bob) == {bobs.id, operator.id}
    assert receivers(about_nobody) == {operator.id}  # an owned endpoint gets only events about its owner


def test_owned_endpoints_still_filter_by_event_type(people):
    alice, _ = people
    stored_only = create_owned_endpoint(owner=alice, url="http://127.0.0.1:9/s", event_types=["file.stored"])
    deleted_only = create_owned_endpoint(owner=alice, url="http://127.0.0.1:9/d", event_types=["file.deleted"])
    with transaction.atomic():
        event = emit_file_event(event_type="file.deleted", upload=stored_file(alice, "gone.txt"))
    assert receivers(event) == {deleted_only.id}
    assert stored_only.id not in receivers(event)


def test_services_refuse_another_users_endpoint_and_deliveries(people):
    alice, bob = people
    endpoint = create_owned_endpoint(owner=alice, url="http://127.0.0.1:9/a", event_types=["file.stored"])
    send_owned_test_event(owner=alice, endpoint_id=endpoint.id)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.FAILED)

    assert list(owned_endpoints(owner=bob)) == []
    for call in (
        lambda: get_owned_endpoint(owner=bob, endpoint_id=endpoint.id),
        lambda: rotate_owned_secret(owner=bob, endpoint_id=endpoint.id),
        lambda: send_owned_test_event(owner=bob, endpoint_id=endpoint.id),
        lambda: set_owned_endpoint_active(owner=bob, endpoint_id=endpoint.id, active=False),
        lambda: recent_deliveries(owner=bob, endpoint_id=endpoint.id),
        lambda: replay_owned_since(owner=bob, endpoint_id=endpoint.id, since=timezone.now() - timedelta(1)),
    ):
        with pytest.raises(WebhookEndpoint.DoesNotExist):
            call()
    with pytest.raises(WebhookDelivery.DoesNotExist):
        replay_owned_delivery(owner=bob, delivery_id=delivery.id)
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == DeliveryStatus.FAILED
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == endpoint.secret

    # The owner can do all of it.
    assert replay_owned_delivery(owner=alice, delivery_id=delivery.id) == (endpoint.id, 1)
    assert rotate_owned_secret(owner=alice, endpoint_id=endpoint.id).secret != endpoint.secret
    assert [d.id for d in recent_deliveries(owner=alice, endpoint_id=endpoint.id)] == [delivery.id]


def test_operator_endpoints_are_not_any_users(people):
    alice, _ = people
    operator = create_endpoint(url="http://127.0.0.1:9/op")
    with pytest.raises(WebhookEndpoint.DoesNotExist):
        get_owned_endpoint(owner=alice, endpoint_id=operator.id)


def test_subscribers_choose_among_the_portals_events(people):
    alice, _ = people
    with pytest.raises(ValidationError, match="choose among"):
        create_owned_endpoint(owner=alice, url="http://127.0.0.1:9/a", event_types=["webhook.test"])
    with pytest.raises(ValidationError, match="choose among"):
        create_owned_endpoint(owner=alice, url="http://127.0.0.1:9/a", event_types=[])
    assert not WebhookEndpoint.objects.exists()


def test_admin_lists_owners_and_filters_operators_endpoints(people, client, django_user_model):
    alice, _ = people
    create_owned_endpoint(owner=alice, url="http://127.0.0.1:9/alices", event_types=["file.stored"])
    create_endpoint(url="http://127.0.0.1:9/operators")
    client.force_login(django_user_model.objects.create_superuser(username="op", password="x"))
    everything = client.get("/admin/common/webhookendpoint/").content.decode()
    assert "/alices" in everything and "/operators" in everything and "alice" in everything
    operators_only = client.get("/admin/common/webhookendpoint/?owner__isempty=1").content.decode()
    assert "/operators" in operators_only and "/alices" not in operators_only


def test_replay_since_takes_failed_deliveries_and_delivered_ones_only_when_asked(people):
    alice, _ = people
    endpoint = create_owned_endpoint(owner=alice, url="http://127.0.0.1:9/a", event_types=["file.stored"])
    deliveries = {}
    for name, status in (("failed", DeliveryStatus.FAILED), ("delivered", DeliveryStatus.DELIVERED), ("old", None)):
        with transaction.atomic():
            emit_file_event(event_type="file.stored", upload=stored_file(alice, f"{name}.txt"))
        delivery = WebhookDelivery.objects.filter(endpoint=endpoint).latest("id")
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status=status or DeliveryStatus.FAILED)
        deliveries[name] = delivery.pk
    # The old one's event predates the window.
    OutboxEvent.objects.filter(deliveries__pk=deliveries["old"]).update(created_at=timezone.now() - timedelta(days=2))
    since = timezone.now() - timedelta(days=1)

    assert replay_owned_since(owner=alice, endpoint_id=endpoint.id, since=since) == 1
    assert WebhookDelivery.objects.get(pk=deliveries["failed"]).status == DeliveryStatus.PENDING
    assert WebhookDelivery.objects.get(pk=deliveries["delivered"]).status == DeliveryStatus.DELIVERED

    assert replay_owned_since(owner=alice, endpoint_id=endpoint.id, since=since, include_delivered=True) == 1
    assert WebhookDelivery.objects.get(pk=deliveries["delivered"]).status == DeliveryStatus.PENDING
    assert WebhookDelivery.objects.get(pk=deliveries["old"]).status == DeliveryStatus.FAILED
