"""emit_event refuses bad input before any SQL, naming the field, and the caller's transaction stays usable."""

from __future__ import annotations

import math

import pytest
from django.db import connection, transaction

from common.outbox.models import OutboxEvent
from tests.outbox.emitting import emit

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.mark.parametrize(
    ("overrides", "error", "field"),
    [
        ({"aggregate_id": "x" * 201}, ValueError, "aggregate_id"),
        ({"aggregate_type": "x" * 101}, ValueError, "aggregate_type"),
        ({"event_type": "a." + "b" * 200}, ValueError, "event_type"),
        ({"idempotency_key": "k" * 256}, ValueError, "idempotency_key"),
        ({"payload": {"x": math.nan}}, ValueError, "payload"),
        ({"payload": {"x": math.inf}}, ValueError, "payload"),
        ({"payload": {"x": "a\x00b"}}, ValueError, "payload"),
        ({"payload": {"a\x00": 1}}, ValueError, "payload"),
        ({"aggregate_id": None}, ValueError, "aggregate_id"),
        ({"aggregate_id": 1.5}, ValueError, "aggregate_id"),
        ({"idempotency_key": 5}, ValueError, "idempotency_key"),
        ({"idempotency_key": None}, ValueError, "idempotency_key"),
        ({"event_type": 5}, ValueError, "event_type"),
        ({"aggregate_type": ["upload"]}, ValueError, "aggregate_type"),
        ({"aggregate_type": "up\x00load"}, ValueError, "aggregate_type"),
    ],
)
def test_emit_refuses_bad_input_naming_the_field_and_keeps_the_transaction_usable(overrides, error, field):
    with transaction.atomic():
        with pytest.raises(error, match=field):
            emit(**overrides)
        # The caller's transaction is not aborted: it can go on and commit other work.
        emit(key="after")
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    assert list(OutboxEvent.objects.values_list("idempotency_key", flat=True)) == ["after"]


def test_emit_accepts_a_literal_backslash_u0000_text_and_int_or_uuid_ids(receiver):
    event = emit(payload={"text": "\\u0000 is how JSON writes NUL"}, aggregate_id=42)
    assert OutboxEvent.objects.get(pk=event.pk).payload == {"text": "\\u0000 is how JSON writes NUL"}
    assert event.aggregate_id == "42"
