"""Send deliveries again: retry a pending one now, or replay a finished one from scratch."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from common.outbox.models import DeliveryStatus, WebhookDelivery, lease_is_free
from common.outbox.services.emit import nudge_delivery


def retry_now(*, delivery_ids: list[int]) -> int:
    """Make pending deliveries not under a live lease due now (the schedule continues from their attempt count)."""
    now = timezone.now()
    with transaction.atomic():
        # An expired lease is a crashed (or overrunning) dispatcher's: clearing its token fences that
        # dispatcher out of recording, so the row is retried here instead of waiting on a dead owner.
        count = WebhookDelivery.objects.filter(
            lease_is_free(now=now), id__in=delivery_ids, status=DeliveryStatus.PENDING
        ).update(next_attempt_at=now, leased_until=None, lease_token=None)
        if count:
            nudge_delivery()
    return count


def _replay(queryset: QuerySet) -> int:
    with transaction.atomic():
        # Same event, same webhook-id: a receiver that already processed it can dedupe.
        count = queryset.exclude(status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.PENDING,
            attempt_count=0,
            next_attempt_at=timezone.now(),
            leased_until=None,
            lease_token=None,
            delivered_at=None,
        )
        if count:
            nudge_delivery()
    return count


def replay_deliveries(*, delivery_ids: list[int]) -> int:
    """Queue delivered or failed deliveries for a fresh round of attempts (same webhook-id); returns how many."""
    return _replay(WebhookDelivery.objects.filter(id__in=delivery_ids, endpoint__is_active=True))


def replay_for_endpoint(
    *, endpoint_id: int, since: datetime, until: datetime | None = None, include_delivered: bool = False
) -> int:
    """Replay the endpoint's failed (and, if asked, delivered) deliveries whose event is in [since, until)."""
    if until is not None and until <= since:
        raise ValueError(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
    statuses = [DeliveryStatus.FAILED, DeliveryStatus.DELIVERED] if include_delivered else [DeliveryStatus.FAILED]
    deliveries = WebhookDelivery.objects.filter(
        endpoint_id=endpoint_id, endpoint__is_active=True, status__in=statuses, event__created_at__gte=since
    )
    if until is not None:
        deliveries = deliveries.filter(event__created_at__lt=until)
    return _replay(deliveries)
