"""A subscriber's own webhook endpoints: every function is scoped by owner, so no user reaches another's.

The work itself is done by the outbox's services (common.outbox.services); this module only adds ownership and
the portal's list of events.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import Prefetch, QuerySet

from common.outbox.models import DeliveryAttempt, OutboxEvent, WebhookDelivery, WebhookEndpoint
from common.outbox.services.emit import send_test_event
from common.outbox.services.endpoints import create_endpoint, disable_endpoint, reenable_endpoint, rotate_secret
from common.outbox.services.replay import replay_deliveries, replay_for_endpoint
from portal.services.events import FILE_EVENT_TYPES

RECENT_DELIVERIES = 50


def owned_endpoints(*, owner: User) -> QuerySet[WebhookEndpoint]:
    """The owner's endpoints, oldest first; never an operator's or another user's."""
    return WebhookEndpoint.objects.filter(owner=owner).order_by("id")


def get_owned_endpoint(*, owner: User, endpoint_id: int) -> WebhookEndpoint:
    """The owner's endpoint; WebhookEndpoint.DoesNotExist for a missing one or anyone else's."""
    return owned_endpoints(owner=owner).get(pk=endpoint_id)


def create_owned_endpoint(*, owner: User, url: str, event_types: list[str], description: str = "") -> WebhookEndpoint:
    """Create an endpoint owned by `owner` for some of the portal's events; ValidationError on bad input."""
    unknown = sorted(set(event_types) - set(FILE_EVENT_TYPES))
    if unknown or not event_types:
        raise ValidationError({"event_types": f"choose among {', '.join(FILE_EVENT_TYPES)}; got {unknown or 'none'}"})
    return create_endpoint(url=url, event_types=list(event_types), description=description, owner=owner)


def rotate_owned_secret(*, owner: User, endpoint_id: int) -> WebhookEndpoint:
    """Give the owner's endpoint a new secret (the old one signs too during the grace period)."""
    return rotate_secret(endpoint_id=get_owned_endpoint(owner=owner, endpoint_id=endpoint_id).pk)


def send_owned_test_event(*, owner: User, endpoint_id: int) -> OutboxEvent:
    """Queue a webhook.test event to the owner's endpoint; ValueError if it is disabled."""
    return send_test_event(endpoint_id=get_owned_endpoint(owner=owner, endpoint_id=endpoint_id).pk)


def set_owned_endpoint_active(*, owner: User, endpoint_id: int, active: bool) -> WebhookEndpoint:
    """Enable or disable the owner's endpoint; disabling fails its waiting deliveries (replayable)."""
    endpoint = get_owned_endpoint(owner=owner, endpoint_id=endpoint_id)
    if active:
        return reenable_endpoint(endpoint_id=endpoint.pk)
    disable_endpoint(endpoint_id=endpoint.pk, reason=f"disabled by its owner {owner.get_username()}")
    endpoint.refresh_from_db()
    return endpoint


def recent_deliveries(*, owner: User, endpoint_id: int) -> list[WebhookDelivery]:
    """The endpoint's latest deliveries, newest first, each with its attempts (newest first)."""
    endpoint = get_owned_endpoint(owner=owner, endpoint_id=endpoint_id)
    return list(
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .select_related("event")
        .prefetch_related(Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("-attempted_at", "-id")))
        .order_by("-created_at", "-id")[:RECENT_DELIVERIES]
    )


def replay_owned_delivery(*, owner: User, delivery_id: int) -> tuple[int, int]:
    """Send one of the owner's finished deliveries again (same webhook-id): (endpoint id, 1), or 0 if not replayed.

    WebhookDelivery.DoesNotExist for a missing delivery or anyone else's.
    """
    delivery = WebhookDelivery.objects.get(pk=delivery_id, endpoint__owner=owner)
    return delivery.endpoint_id, replay_deliveries(delivery_ids=[delivery.pk])


def replay_owned_since(*, owner: User, endpoint_id: int, since: datetime, include_delivered: bool = False) -> int:
    """Send again every failed (and, if asked, delivered) delivery of the owner's endpoint from `since` on."""
    endpoint = get_owned_endpoint(owner=owner, endpoint_id=endpoint_id)
    return replay_for_endpoint(endpoint_id=endpoint.pk, since=since, include_delivered=include_delivered)
