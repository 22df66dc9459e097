"""Emit outbox events in the caller's transaction and nudge delivery once it commits."""

from __future__ import annotations

import json
import logging
import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from common.models import OutboxEvent, WebhookDelivery, WebhookEndpoint
from common.services.event_matching import PATTERN, matches

logger = logging.getLogger(__name__)

_INSERT_EVENT = """
INSERT INTO common_outboxevent (id, event_type, aggregate_type, aggregate_id, payload, idempotency_key, created_at)
VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s)
ON CONFLICT (event_type, idempotency_key) DO NOTHING
RETURNING id
"""


def _validate(*, event_type: str, aggregate_type: str, aggregate_id: str, payload: dict, idempotency_key: str) -> str:
    if not event_type or "*" in event_type or not PATTERN.match(event_type):
        raise ValueError(f"event_type must be a dotted lowercase name like file.stored, got {event_type!r}")
    if not aggregate_type or not aggregate_id:
        raise ValueError("aggregate_type and aggregate_id must not be empty")
    if not idempotency_key or len(idempotency_key) > 255:
        raise ValueError("idempotency_key must be 1 to 255 characters")
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    try:
        return json.dumps(payload, cls=DjangoJSONEncoder)
    except TypeError as exc:
        raise TypeError(f"payload is not JSON-serializable: {exc}") from None


def emit_event(
    *, event_type: str, aggregate_type: str, aggregate_id: str, payload: dict, idempotency_key: str
) -> OutboxEvent:
    """Write the event and one delivery per matching active endpoint in the caller's transaction; idempotent."""
    payload_json = _validate(
        event_type=event_type,
        aggregate_type=aggregate_type,
        aggregate_id=str(aggregate_id),
        payload=payload,
        idempotency_key=idempotency_key,
    )
    now = timezone.now()
    with transaction.atomic():
        # ON CONFLICT DO NOTHING: a concurrent duplicate waits for the first writer, then sees its row
        # below; no IntegrityError ever reaches the caller and the caller's transaction stays usable.
        with connection.cursor() as cursor:
            cursor.execute(
                _INSERT_EVENT,
                [uuid.uuid4(), event_type, aggregate_type, str(aggregate_id), payload_json, idempotency_key, now],
            )
            inserted = cursor.fetchone()
        if inserted is None:
            return OutboxEvent.objects.get(event_type=event_type, idempotency_key=idempotency_key)
        event = OutboxEvent.objects.get(pk=inserted[0])
        endpoints = [
            endpoint
            for endpoint in WebhookEndpoint.objects.filter(is_active=True).only("id", "event_types")
            if matches(patterns=endpoint.event_types, event_type=event_type)
        ]
        WebhookDelivery.objects.bulk_create(
            [WebhookDelivery(event=event, endpoint=endpoint, next_attempt_at=now) for endpoint in endpoints]
        )
    if endpoints:
        nudge_delivery()
    return event


def _send_deliver_task() -> None:
    from common.tasks import deliver_outbox_events_task

    deliver_outbox_events_task.apply_async(queue="high")


def _nudged_in_this_transaction() -> None:
    """Marker in run_on_commit: this transaction already holds a nudge message (rolled back with it)."""


def nudge_delivery() -> None:
    """Once the current transaction commits, ask a worker on `high` to deliver (at most once per transaction)."""
    nudges = (_send_deliver_task, _nudged_in_this_transaction)
    if connection.in_atomic_block and any(func in nudges for _, func, _ in connection.run_on_commit):
        return
    if connection.in_atomic_block:
        from common.broker.services.transactional import enqueue_in_transaction
        from common.tasks import deliver_outbox_events_task

        # The nudge message commits or rolls back with the events: no window where a committed event has
        # no nudge (a crash between commit and an on_commit send). Eager mode or a non-SQL broker falls
        # back to on_commit inside enqueue_in_transaction.
        enqueue_in_transaction(task=deliver_outbox_events_task, queue="high")
        transaction.on_commit(_nudged_in_this_transaction)
        return
    # robust: a broker hiccup after commit must not turn a committed emit into an error; the beat
    # sweep delivers whatever a lost nudge missed.
    transaction.on_commit(_send_deliver_task, robust=True)


def send_test_event(*, endpoint_id: int) -> OutboxEvent:
    """Emit a `webhook.test` event delivered to this one endpoint only (active or not is checked by delivery)."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.get(pk=endpoint_id)
        event = OutboxEvent.objects.create(
            event_type="webhook.test",
            aggregate_type="webhook_endpoint",
            aggregate_id=str(endpoint.id),
            payload={"endpoint_id": endpoint.id, "message": "Test event sent from the Doorito admin."},
            idempotency_key=f"test-{uuid.uuid4()}",
        )
        WebhookDelivery.objects.create(event=event, endpoint=endpoint, next_attempt_at=timezone.now())
        nudge_delivery()
    return event
