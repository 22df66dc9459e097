"""Delete outbox events that are fully settled and past retention."""

from __future__ import annotations

import time
from datetime import timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from common.outbox.models import DeliveryAttempt, DeliveryStatus, OutboxEvent, WebhookDelivery


def _eligible(*, retention_hours: int) -> QuerySet[OutboxEvent]:
    cutoff = timezone.now() - timedelta(hours=retention_hours)
    unsettled = WebhookDelivery.objects.filter(event_id=OuterRef("pk"), status=DeliveryStatus.PENDING)
    return OutboxEvent.objects.filter(created_at__lt=cutoff).exclude(Exists(unsettled))


def delete_settled_events(*, retention_hours: int, batch_size: int, time_budget: float = 60.0) -> dict[str, int]:
    """Delete events older than retention whose deliveries are all terminal, batch by batch; {"deleted","remaining"}."""
    deadline = time.monotonic() + time_budget
    deleted = 0
    while time.monotonic() < deadline:
        with transaction.atomic():
            # Lock the batch so a concurrent replay cannot revive a delivery we are deleting.
            ids = list(
                _eligible(retention_hours=retention_hours)
                .select_for_update(skip_locked=True)
                .values_list("id", flat=True)[:batch_size]
            )
            if not ids:
                break
            DeliveryAttempt.objects.filter(delivery__event_id__in=ids).delete()
            WebhookDelivery.objects.filter(event_id__in=ids).delete()
            OutboxEvent.objects.filter(id__in=ids).delete()
        deleted += len(ids)
    return {"deleted": deleted, "remaining": _eligible(retention_hours=retention_hours).count()}
