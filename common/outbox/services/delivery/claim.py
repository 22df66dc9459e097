"""Claim due webhook deliveries with a lease, and give back leases that were not used."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from common.outbox.models import DeliveryStatus, WebhookDelivery, webhook_id_for
from common.outbox.services.signing import envelope_body, signing_secrets

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimedDelivery:
    id: int
    lease_token: uuid.UUID
    endpoint_id: int
    url: str
    secrets: tuple[str, ...]
    msg_id: str
    body: bytes


def _due() -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(
        status=DeliveryStatus.PENDING, next_attempt_at__lte=timezone.now(), endpoint__is_active=True
    )


def count_due() -> int:
    """Number of deliveries due now and not leased by any dispatcher."""
    return _due().count()


# Lock and lease in one statement (atomic on its own), then join what signing and sending need.
_CLAIM = """
WITH due AS (
    SELECT d.id FROM common_webhookdelivery d
    JOIN common_webhookendpoint e ON e.id = d.endpoint_id
    WHERE d.status = 'pending' AND d.next_attempt_at <= %(now)s AND e.is_active
    ORDER BY d.next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE OF d SKIP LOCKED
), leased AS (
    UPDATE common_webhookdelivery d
    SET leased_until = %(leased_until)s, lease_token = %(token)s, next_attempt_at = %(leased_until)s
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.event_id, d.endpoint_id
)
SELECT leased.id, e.id, e.url, e.secret, e.previous_secret, e.previous_secret_expires_at,
       ev.id, ev.event_type, ev.created_at, ev.payload
FROM leased
JOIN common_webhookendpoint e ON e.id = leased.endpoint_id
JOIN common_outboxevent ev ON ev.id = leased.event_id
"""


def claim_due_deliveries(*, limit: int) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries to this caller (SKIP LOCKED: never one claimed twice at once)."""
    now = timezone.now()
    token = uuid.uuid4()
    leased_until = now + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM, {"now": now, "limit": limit, "leased_until": leased_until, "token": token})
        rows = cursor.fetchall()
    claimed = []
    for (
        delivery_id,
        endpoint_id,
        url,
        secret,
        previous,
        previous_expires,
        event_id,
        event_type,
        created,
        payload,
    ) in rows:
        claimed.append(
            ClaimedDelivery(
                id=delivery_id,
                lease_token=token,
                endpoint_id=endpoint_id,
                url=url,
                secrets=signing_secrets(
                    secret=secret, previous_secret=previous, previous_secret_expires_at=previous_expires, now=now
                ),
                msg_id=webhook_id_for(event_id),
                # Django's connection hands jsonb over as text (JSONField decodes it): decode it the same way.
                body=envelope_body(event_type=event_type, timestamp=created, data=json.loads(payload)),
            )
        )
    return claimed


def release_leases(*, claimed: list[ClaimedDelivery]) -> None:
    """Make still-leased deliveries that were not sent due again at once (nothing is recorded for them)."""
    if not claimed:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE common_webhookdelivery SET leased_until = NULL, lease_token = NULL, next_attempt_at = %s "
            "WHERE id = ANY(%s) AND lease_token = ANY(%s)",
            [timezone.now(), [c.id for c in claimed], list({c.lease_token for c in claimed})],
        )
