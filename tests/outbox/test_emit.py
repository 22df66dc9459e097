"""emit_event: in the caller's transaction, idempotent (also under concurrency), fan-out by subscription."""

from __future__ import annotations

import threading

import psycopg
import pytest
from django.db import connection, transaction

from common.database_urls import database_url_for
from common.outbox.models import OutboxEvent, WebhookDelivery
from common.outbox.services.endpoints import create_endpoint, disable_endpoint
from tests.outbox.emitting import emit


@pytest.mark.django_db
def test_event_and_one_delivery_per_matching_active_endpoint():
    everything = create_endpoint(url="https://a.example.com/hook")
    files = create_endpoint(url="https://b.example.com/hook", event_types=["file.*"])
    create_endpoint(url="https://c.example.com/hook", event_types=["file.deleted"])
    create_endpoint(url="https://d.example.com/hook", event_types=["user.*"])
    off = create_endpoint(url="https://e.example.com/hook")
    disable_endpoint(endpoint_id=off.id, reason="test")

    event = emit()

    assert event.event_type == "file.stored" and event.payload == {"name": "report.pdf", "size": 12}
    targets = set(WebhookDelivery.objects.filter(event=event).values_list("endpoint_id", flat=True))
    assert targets == {everything.id, files.id}
    assert all(d.status == "pending" and d.attempt_count == 0 for d in event.deliveries.all())


@pytest.mark.django_db
def test_same_type_and_key_returns_existing_event_and_creates_nothing():
    create_endpoint(url="https://a.example.com/hook")
    first = emit()
    with transaction.atomic():  # the caller's transaction stays usable after a duplicate
        again = emit(payload={"size": 999})
        assert OutboxEvent.objects.count() == 1
    assert again.pk == first.pk and again.payload == {"name": "report.pdf", "size": 12}
    assert WebhookDelivery.objects.count() == 1
    # A different type with the same key is a different event.
    assert emit(event_type="file.deleted").pk != first.pk


@pytest.mark.django_db
def test_rolled_back_transaction_leaves_nothing():
    create_endpoint(url="https://a.example.com/hook")
    with pytest.raises(RuntimeError), transaction.atomic():
        emit()
        raise RuntimeError("business write failed")
    assert OutboxEvent.objects.count() == 0 and WebhookDelivery.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"event_type": "File Stored"}, ValueError),
        ({"event_type": "file.*"}, ValueError),
        ({"idempotency_key": ""}, ValueError),
        ({"aggregate_id": ""}, ValueError),
        ({"payload": ["not", "a", "dict"]}, TypeError),
        ({"payload": {"x": object()}}, TypeError),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(kwargs, error):
    with pytest.raises(error):
        emit(**kwargs)
    assert OutboxEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_create_one_event_and_raise_nothing():
    create_endpoint(url="https://a.example.com/hook")
    barrier = threading.Barrier(6)
    results, errors = [], []

    def worker():
        try:
            barrier.wait()
            with transaction.atomic():
                results.append(emit(key="same").pk)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 6
    assert OutboxEvent.objects.count() == 1 and WebhookDelivery.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_commit_sends_one_delivery_nudge_to_the_high_queue(clean_broker):
    create_endpoint(url="https://a.example.com/hook")

    def high_messages() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT m.payload FROM kombu_message m JOIN kombu_queue q ON q.id = m.queue_id WHERE q.name = 'high'"
            )
            return [row[0] for row in cursor.fetchall()]

    with transaction.atomic():
        emit(key="a")
        emit(key="b")
        # Nothing leaves before commit: the nudge is written in this transaction, so only other sessions matter.
        with psycopg.connect(database_url_for(connection.settings_dict)) as other:
            assert other.execute("SELECT count(*) FROM kombu_message").fetchone()[0] == 0
    messages = high_messages()
    assert len(messages) == 1 and "common.tasks.deliver_outbox_events_task" in messages[0]
