"""Emitting events for the outbox tests and the webhook benchmark: one helper, so every test emits the same way."""

import uuid
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from common.outbox.models import OutboxEvent, WebhookDelivery
from common.outbox.services.emit import emit_event


def emit_many(n: int, *, key_prefix: str = "e") -> None:
    """Emit n `file.stored` events in one transaction, with distinct idempotency keys."""
    with transaction.atomic():
        for i in range(n):
            emit_event(
                event_type="file.stored",
                aggregate_type="upload",
                aggregate_id=str(i),
                payload={"i": i, "name": f"file-{i}.pdf"},
                idempotency_key=f"{key_prefix}{i}",
            )


def emit(key: str = "k", **overrides: object) -> OutboxEvent:
    """Emit one `file.stored` event (any emit_event argument can be overridden) in the caller's transaction."""
    arguments: dict = {
        "event_type": "file.stored",
        "aggregate_type": "upload",
        "aggregate_id": "7",
        "payload": {"name": "report.pdf", "size": 12},
        "idempotency_key": key,
    }
    arguments.update(overrides)
    return emit_event(**arguments)


def lease_delivery(delivery_id: int, *, seconds: int) -> None:
    """Make the delivery look claimed by a dispatcher whose lease ends in `seconds` (negative: already expired)."""
    until = timezone.now() + timedelta(seconds=seconds)
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        leased_until=until, lease_token=uuid.uuid4(), next_attempt_at=until
    )
