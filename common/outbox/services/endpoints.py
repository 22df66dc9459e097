"""Webhook endpoint lifecycle: create, rotate the secret, disable, re-enable."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone

from common.outbox.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, lease_is_free, max_length_of
from common.outbox.services.guarded_http import check_resolved_url
from common.outbox.services.network_guard import check_url
from common.outbox.services.signing import generate_secret
from common.outbox.services.subscriptions import validate_event_type_pattern

_url_syntax = URLValidator(schemes=["http", "https"])


def validate_endpoint_input(*, url: str, event_types: object, description: str) -> list[str]:
    """Return the event type patterns, or raise ValidationError (BlockedDestinationError for a refused URL)."""
    if not isinstance(url, str):
        raise ValidationError({"url": f"must be a string, got {type(url).__name__}"})
    check_url(url=url)  # scheme, host and literal addresses: the SSRF guard's own rules
    max_url = max_length_of(WebhookEndpoint, "url")
    if len(url) > max_url:
        raise ValidationError({"url": f"at most {max_url} characters, got {len(url)}"})
    try:
        _url_syntax(url)
    except ValidationError:
        raise ValidationError({"url": f"not a valid http(s) URL: {url!r}"}) from None
    check_resolved_url(url=url)  # a name pointing inside now is refused now, not after days of retries
    # A bare string would be iterated character by character; a dict or number has no meaning here.
    if event_types is None:
        event_types = []
    if not isinstance(event_types, list | tuple) or not all(isinstance(p, str) for p in event_types):
        raise ValidationError(
            {"event_types": f'a list of event type strings, e.g. ["file.*", "user.created"], got {event_types!r}'}
        )
    for pattern in event_types:
        try:
            validate_event_type_pattern(pattern=pattern)
        except ValueError as exc:
            raise ValidationError({"event_types": str(exc)}) from None
    max_description = max_length_of(WebhookEndpoint, "description")
    if not isinstance(description, str) or (max_description and len(description) > max_description):
        raise ValidationError({"description": f"a string of at most {max_description} characters"})
    return list(event_types)


def create_endpoint(
    *, url: str, event_types: list[str] | None = None, description: str = "", owner: User | None = None
) -> WebhookEndpoint:
    """Create an active endpoint with a fresh `whsec_` secret, after checking the URL and patterns.

    No owner: an operator's endpoint (every event); an owner: only events about that user.
    """
    patterns = validate_endpoint_input(url=url, event_types=event_types, description=description)
    return WebhookEndpoint.objects.create(
        url=url, event_types=patterns, description=description, secret=generate_secret(), owner=owner
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


def disable_endpoint(*, endpoint_id: int, reason: str) -> int:
    """Deactivate the endpoint with `reason`; its waiting deliveries become `failed` (replayable); returns how many."""
    now = timezone.now()
    with transaction.atomic():
        updated = WebhookEndpoint.objects.filter(pk=endpoint_id, is_active=True).update(
            is_active=False, disabled_reason=reason[:500], disabled_at=now, updated_at=now
        )
        if not updated:
            return 0
        # Live leases are left to their dispatcher, which records the outcome. An expired lease
        # belongs to a dispatcher that crashed (or overran): fail it too and clear its token, so a
        # late dispatcher's recording is fenced out instead of leaving the row pending forever.
        return WebhookDelivery.objects.filter(
            lease_is_free(now=now),
            endpoint_id=endpoint_id,
            status=DeliveryStatus.PENDING,
        ).update(
            status=DeliveryStatus.FAILED,
            leased_until=None,
            lease_token=None,
            last_error=f"endpoint disabled: {reason}"[:2000],
        )


def reenable_endpoint(*, endpoint_id: int) -> WebhookEndpoint:
    """Activate the endpoint again and clear its failure state; replay failed deliveries separately."""
    now = timezone.now()
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(
        is_active=True, disabled_reason="", disabled_at=None, failing_since=None, updated_at=now
    )
    return WebhookEndpoint.objects.get(pk=endpoint_id)


def update_endpoint(*, endpoint_id: int, url: str, event_types: list[str], description: str = "") -> WebhookEndpoint:
    """Change where and what an endpoint receives, after the same checks as creation; the secret is untouched."""
    patterns = validate_endpoint_input(url=url, event_types=event_types, description=description)
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(
        url=url, event_types=patterns, description=description, updated_at=timezone.now()
    )
    return WebhookEndpoint.objects.get(pk=endpoint_id)
