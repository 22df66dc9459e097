"""A snapshot of the outbox's health for operators (management command, status screen)."""

from __future__ import annotations

from django.db.models import Count, Min, Q
from django.utils import timezone

from common.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint


def get_outbox_health() -> dict:
    """Return delivery counts by status, in-flight/due counts, the oldest pending age and the failing endpoints."""
    now = timezone.now()
    by_status = dict(WebhookDelivery.objects.values_list("status").annotate(n=Count("id")).order_by())
    pending = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING)
    summary = pending.aggregate(
        oldest=Min("created_at"),
        in_flight=Count("id", filter=Q(leased_until__gt=now)),
        due=Count("id", filter=Q(next_attempt_at__lte=now)),
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
