"""Emit outbox events in the caller's transaction and nudge delivery once it commits."""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from common.broker.services.transactional import enqueue_in_transaction
from common.outbox.models import OutboxEvent, WebhookDelivery, WebhookEndpoint, max_length_of
from common.outbox.services.subscriptions import PATTERN, SUBSCRIBED_SQL
from common.outbox.tasks import deliver_outbox_events_task

logger = logging.getLogger(__name__)

# One statement writes the event and its deliveries: it is atomic on its own, so no savepoint is
# needed, and ON CONFLICT DO NOTHING makes a duplicate a no-op (the event CTE is then empty, so no
# deliveries either) that leaves the caller's transaction usable. A concurrent duplicate waits for
# the first writer's commit, then does nothing. Row values mirror the models' defaults.
_INSERT_EVENT_AND_DELIVERIES = f"""
WITH event AS (
    INSERT INTO common_outboxevent (id, event_type, aggregate_type, aggregate_id, payload, idempotency_key, created_at)
    VALUES (%(id)s, %(event_type)s, %(aggregate_type)s, %(aggregate_id)s, %(payload)s::jsonb, %(key)s, %(now)s)
    ON CONFLICT (event_type, idempotency_key) DO NOTHING
    RETURNING id
), deliveries AS (
    INSERT INTO common_webhookdelivery
        (event_id, endpoint_id, status, attempt_count, next_attempt_at, last_error, created_at)
    SELECT event.id, e.id, 'pending', 0, %(now)s, '', %(now)s
    FROM event CROSS JOIN common_webhookendpoint e
    WHERE e.is_active AND {SUBSCRIBED_SQL}
    RETURNING 1
)
SELECT (SELECT id FROM event), (SELECT count(*) FROM deliveries)
"""  # noqa: S608 - only a constant is interpolated


# An escaped NUL (an odd number of backslashes before u0000) in JSON text: jsonb refuses it.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _validate(
    *, event_type: object, aggregate_type: object, aggregate_id: object, payload: object, idempotency_key: object
) -> tuple[str, str]:
    # Everything the database would refuse is refused here, before any SQL: an error inside the
    # single INSERT statement would abort the caller's transaction.
    if not isinstance(event_type, str):
        raise ValueError(f"event_type must be a str, got {type(event_type).__name__}")
    if not isinstance(aggregate_type, str):
        raise ValueError(f"aggregate_type must be a str, got {type(aggregate_type).__name__}")
    if not event_type or "*" in event_type or not PATTERN.match(event_type):
        raise ValueError(f"event_type must be a dotted lowercase name like file.stored, got {event_type!r}")
    if aggregate_id is None or isinstance(aggregate_id, bool) or not isinstance(aggregate_id, str | int | uuid.UUID):
        raise ValueError(f"aggregate_id must be a str, int or UUID, got {type(aggregate_id).__name__}")
    aggregate_id = str(aggregate_id)
    if not aggregate_type or not aggregate_id:
        raise ValueError("aggregate_type and aggregate_id must not be empty")
    if not isinstance(idempotency_key, str) or not idempotency_key:
        raise ValueError(f"idempotency_key must be a non-empty str, got {idempotency_key!r}")
    for name, value in (
        ("event_type", event_type),
        ("aggregate_type", aggregate_type),
        ("aggregate_id", aggregate_id),
        ("idempotency_key", idempotency_key),
    ):
        if len(value) > max_length_of(OutboxEvent, name):
            raise ValueError(f"{name} must be at most {max_length_of(OutboxEvent, name)} characters, got {len(value)}")
        if "\x00" in value:
            raise ValueError(f"{name} must not contain NUL characters")
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    try:
        payload_json = json.dumps(payload, cls=DjangoJSONEncoder, allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"payload is not JSON-serializable: {exc}") from None
    except ValueError as exc:  # NaN or Infinity: valid Python floats, not JSON
        raise ValueError(f"payload is not valid JSON: {exc}") from None
    if _JSON_NUL.search(payload_json):
        raise ValueError("payload must not contain NUL characters (\\u0000): PostgreSQL's jsonb refuses them")
    return aggregate_id, payload_json


def emit_event(
    *, event_type: str, aggregate_type: str, aggregate_id: str, payload: dict, idempotency_key: str
) -> OutboxEvent:
    """Write the event and one delivery per matching active endpoint in the caller's transaction; idempotent."""
    aggregate_id, payload_json = _validate(
        event_type=event_type,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        payload=payload,
        idempotency_key=idempotency_key,
    )
    now = timezone.now()
    event_id = uuid.uuid4()
    params: dict[str, Any] = {
        "id": event_id,
        "event_type": event_type,
        "aggregate_type": aggregate_type,
        "aggregate_id": str(aggregate_id),
        "payload": payload_json,
        "key": idempotency_key,
        "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_EVENT_AND_DELIVERIES, params)
        inserted_id, delivery_count = cursor.fetchone()
    if inserted_id is None:
        return OutboxEvent.objects.get(event_type=event_type, idempotency_key=idempotency_key)
    if delivery_count:
        nudge_delivery()
    # The row is exactly what we sent, so build it instead of reading it back (payload as stored: via JSON).
    event = OutboxEvent(
        id=event_id,
        event_type=event_type,
        aggregate_type=aggregate_type,
        aggregate_id=str(aggregate_id),
        payload=json.loads(payload_json),
        idempotency_key=idempotency_key,
        created_at=now,
    )
    event._state.adding, event._state.db = False, connection.alias
    return event


def _send_deliver_task() -> None:
    deliver_outbox_events_task.apply_async()


def _nudged_in_this_transaction() -> None:
    """Marker in run_on_commit: this transaction already holds a nudge message (rolled back with it)."""


def nudge_delivery() -> None:
    """Once the current transaction commits, ask a worker on `high` to deliver (at most once per transaction)."""
    nudges = (_send_deliver_task, _nudged_in_this_transaction)
    if connection.in_atomic_block and any(entry[1] in nudges for entry in connection.run_on_commit):
        return
    if connection.in_atomic_block:
        # The nudge message commits or rolls back with the events: no window where a committed event has
        # no nudge (a crash between commit and an on_commit send). Eager mode or a non-SQL broker falls
        # back to on_commit inside enqueue_in_transaction.
        enqueue_in_transaction(task=deliver_outbox_events_task)
        transaction.on_commit(_nudged_in_this_transaction)
        return
    # robust: a broker hiccup after commit must not turn a committed emit into an error; the beat
    # sweep delivers whatever a lost nudge missed.
    transaction.on_commit(_send_deliver_task, robust=True)


def send_test_event(*, endpoint_id: int) -> OutboxEvent:
    """Queue a `webhook.test` event to this one endpoint; ValueError if it is disabled (it would never be sent)."""
    with transaction.atomic():
        # Locked so a concurrent disable cannot slip in between the check and the delivery row.
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
        if not endpoint.is_active:
            raise ValueError(
                f"endpoint {endpoint.id} {endpoint.url} is disabled ({endpoint.disabled_reason}); re-enable it first"
            )
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
