"""A snapshot of the outbox's health for operators (management command, status screen)."""

from __future__ import annotations

from django.db.models import Count, Min, Q
from django.utils import timezone

from common.outbox.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, lease_is_free


def get_outbox_health() -> dict:
    """Return counts by status, in-flight/due counts, oldest pending and oldest due ages, and failing endpoints."""
    now = timezone.now()
    by_status = dict(WebhookDelivery.objects.values_list("status").annotate(n=Count("id")).order_by())
    pending = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING)
    summary = pending.aggregate(
        oldest=Min("created_at"),
        in_flight=Count("id", filter=Q(leased_until__gt=now)),
        due=Count("id", filter=Q(next_attempt_at__lte=now)),
    )
    # Due and claimable: work a dispatcher should be doing right now. A delivery waiting out its
    # backoff is pending but not due, so a receiver that is down does not look like a stuck dispatcher.
    oldest_due = (
        pending.filter(lease_is_free(now=now), next_attempt_at__lte=now)
        .filter(endpoint__is_active=True)
        .aggregate(oldest=Min("next_attempt_at"))["oldest"]
    )
    failing = WebhookEndpoint.objects.filter(Q(failing_since__isnull=False) | Q(is_active=False)).annotate(
        pending=Count("deliveries", filter=Q(deliveries__status=DeliveryStatus.PENDING)),
        failed=Count("deliveries", filter=Q(deliveries__status=DeliveryStatus.FAILED)),
    )
    return {
        "deliveries": {status: by_status.get(status, 0) for status in DeliveryStatus.values},
        "in_flight": summary["in_flight"],
        "due": summary["due"],
        "oldest_pending_age_seconds": (now - summary["oldest"]).total_seconds() if summary["oldest"] else None,
        "oldest_due_age_seconds": (now - oldest_due).total_seconds() if oldest_due else None,
        "failing_endpoints": [
            {
                "id": endpoint.id,
                "url": endpoint.url,
                "is_active": endpoint.is_active,
                "failing_since": endpoint.failing_since.isoformat() if endpoint.failing_since else None,
                "disabled_reason": endpoint.disabled_reason,
                "pending": endpoint.pending,
                "failed": endpoint.failed,
            }
            for endpoint in failing.order_by("id")
        ],
    }
