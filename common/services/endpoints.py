"""Webhook endpoint lifecycle: create, rotate the secret, disable, re-enable."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from common.services.event_matching import validate_event_type_pattern
from common.services.network_guard import check_url
from common.services.signing import generate_secret


def create_endpoint(*, url: str, event_types: list[str] | None = None, description: str = "") -> WebhookEndpoint:
    """Create an active endpoint with a fresh `whsec_` secret, after checking the URL and patterns."""
    check_url(url=url)
    for pattern in event_types or []:
        validate_event_type_pattern(pattern=pattern)
    return WebhookEndpoint.objects.create(
        url=url, event_types=list(event_types or []), description=description, secret=generate_secret()
    )


def rotate_secret(*, endpoint_id: int, grace_seconds: int | None = None) -> WebhookEndpoint:
    """Give the endpoint a new secret; the old one keeps signing too until the grace period ends."""
    grace = settings.WEBHOOK_SECRET_ROTATION_GRACE_SECONDS if grace_seconds is None else grace_seconds
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = timezone.now() + timedelta(seconds=grace)
        endpoint.secret = generate_secret()
        endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"])
    return endpoint


def signing_secrets(
    *, secret: str, previous_secret: str, previous_secret_expires_at: datetime | None, now: datetime
) -> tuple[str, ...]:
    """The secrets to sign with at `now`: the current one, plus the previous one inside its grace period."""
    if previous_secret and previous_secret_expires_at and previous_secret_expires_at > now:
        return (secret, previous_secret)
    return (secret,)


def disable_endpoint(*, endpoint_id: int, reason: str) -> int:
    """Deactivate the endpoint with `reason`; its waiting deliveries become `failed` (replayable); returns how many."""
    now = timezone.now()
    with transaction.atomic():
        updated = WebhookEndpoint.objects.filter(pk=endpoint_id, is_active=True).update(
            is_active=False, disabled_reason=reason[:500], disabled_at=now, updated_at=now
        )
        if not updated:
            return 0
        # Leased (in-flight) deliveries are left to their dispatcher, which records the outcome.
        return WebhookDelivery.objects.filter(
            endpoint_id=endpoint_id, status=DeliveryStatus.PENDING, leased_until__isnull=True
        ).update(status=DeliveryStatus.FAILED, last_error=f"endpoint disabled: {reason}"[:2000])


def reenable_endpoint(*, endpoint_id: int) -> WebhookEndpoint:
    """Activate the endpoint again and clear its failure state; replay failed deliveries separately."""
    now = timezone.now()
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(
        is_active=True, disabled_reason="", disabled_at=None, failing_since=None, updated_at=now
    )
    return WebhookEndpoint.objects.get(pk=endpoint_id)


def update_endpoint(*, endpoint_id: int, url: str, event_types: list[str], description: str = "") -> WebhookEndpoint:
    """Change where and what an endpoint receives, after the same checks as creation; the secret is untouched."""
    check_url(url=url)
    for pattern in event_types:
        validate_event_type_pattern(pattern=pattern)
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(
        url=url, event_types=list(event_types), description=description, updated_at=timezone.now()
    )
    return WebhookEndpoint.objects.get(pk=endpoint_id)
