"""Delivery hardening (review 3): unstorable results, per-attempt deadline, slow endpoints, bad emit input."""

from __future__ import annotations

import math

import pytest
from django.db import connection, transaction

from common.models import DeliveryAttempt, DeliveryStatus, OutboxEvent, WebhookDelivery
from common.services import delivery
from common.services.delivery import claim_due_deliveries, deliver_due, record_attempts, send
from common.services.endpoints import create_endpoint
from common.services.outbox import emit_event

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def emit(key="k", **overrides):
    kwargs = {
        "event_type": "file.stored",
        "aggregate_type": "upload",
        "aggregate_id": "7",
        "payload": {"name": "report.pdf"},
        "idempotency_key": key,
    }
    kwargs.update(overrides)
    return emit_event(**kwargs)


# --- M1: a result PostgreSQL refuses never blocks recording --------------------------------------


def test_a_nul_byte_in_one_response_body_does_not_stop_recording_the_chunk(receiver):
    bad = create_endpoint(url=receiver.plan("/nul", [("body", 500, b"bad\x00body")]))
    good = create_endpoint(url=receiver.plan("/ok", [200]))
    emit()

    result = deliver_due(limit=10, time_budget=5)

    assert result["processed"] == 2 and result["delivered"] == 1 and result["failed"] == 1
    assert WebhookDelivery.objects.get(endpoint=good).status == DeliveryStatus.DELIVERED
    failed = WebhookDelivery.objects.get(endpoint=bad)
    assert failed.status == DeliveryStatus.PENDING and failed.attempt_count == 1 and failed.leased_until is None
    attempt = DeliveryAttempt.objects.get(delivery=failed)
    assert attempt.status_code == 500 and attempt.response_body == "bad\ufffdbody"
    assert len(receiver.received("/ok")) == 1  # sent once, recorded: not re-sent after a lease


@pytest.mark.django_db(transaction=True)  # the foreign key is checked at commit (deferred)
def test_a_batch_the_database_refuses_is_recorded_row_by_row(receiver):
    # A row that cannot be stored at all (its delivery was deleted while it was on the wire) used to
    # sink the batch INSERT and leave every other delivery in it leased, to be re-sent after the lease.
    gone = create_endpoint(url=receiver.plan("/gone", [200]))
    good = create_endpoint(url=receiver.plan("/ok", [200]))
    emit()
    claimed = claim_due_deliveries(limit=10)
    session, _ = delivery._session_and_executor()
    results = [(c, send(session=session, claimed=c)) for c in claimed]
    WebhookDelivery.objects.filter(endpoint=gone).delete()

    counts = record_attempts(results=results)

    assert counts == {"delivered": 1, "failed": 0, "stale": 0}
    kept = WebhookDelivery.objects.get(endpoint=good)
    assert kept.status == DeliveryStatus.DELIVERED and kept.leased_until is None
    assert DeliveryAttempt.objects.filter(delivery=kept).count() == 1


def test_a_nul_byte_in_an_error_is_stored_replaced():
    from common.services.delivery import storable_text

    assert storable_text("a\x00b\x00") == "a\ufffdb\ufffd"


# --- M5: emit_event refuses bad input before any SQL, naming the field ---------------------------


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


# --- M2: one attempt has a total deadline ---------------------------------------------------------


def test_a_receiver_trickling_its_headers_is_cut_off_at_the_total_deadline(receiver, settings):
    # Each byte comes well inside the read timeout, so only a wall-clock deadline can stop it; without
    # one the attempt lasts 30 x 0.3 = 9 s, far past connect + read = 1.5 s (and past a lease of 3 s).
    settings.WEBHOOK_CONNECT_TIMEOUT, settings.WEBHOOK_READ_TIMEOUT = 0.5, 1.0
    settings.OUTBOX_LEASE_SECONDS = 3
    endpoint = create_endpoint(url=receiver.plan("/trickle", [("trickle", 0.3, 30)]))
    emit()

    result = deliver_due(limit=10, time_budget=5)

    assert result["failed"] == 1
    attempt = DeliveryAttempt.objects.get(delivery__endpoint=endpoint)
    assert attempt.status_code is None
    assert attempt.error.startswith("timeout: the attempt exceeded its total deadline of 1.5s"), attempt.error
    # Cut at the deadline, not when the receiver gave up: recorded well inside the lease.
    assert attempt.duration_ms < 2500, attempt.duration_ms
    assert WebhookDelivery.objects.get(endpoint=endpoint).status == DeliveryStatus.PENDING


def test_a_dns_lookup_that_hangs_is_bounded_by_the_deadline(monkeypatch, settings):
    import socket
    import time

    settings.WEBHOOK_CONNECT_TIMEOUT, settings.WEBHOOK_READ_TIMEOUT = 0.5, 0.5
    real = socket.getaddrinfo

    def slow_resolver(host, *args, **kwargs):
        if host == "slow-dns.example":
            time.sleep(4)  # a resolver that never answers in time
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_resolver)
    claimed = delivery.ClaimedDelivery(
        id=0,
        lease_token=None,
        endpoint_id=0,
        url="http://slow-dns.example/hook",
        secrets=("whsec_" + "A" * 32,),
        msg_id="msg_x",
        body=b"{}",
    )
    session, _ = delivery._session_and_executor()

    outcome = send(session=session, claimed=claimed)

    assert outcome.status_code is None
    assert "DNS lookup of 'slow-dns.example' took longer than" in outcome.error, outcome.error
    assert outcome.duration_ms < 2000, outcome.duration_ms


# --- M3: a slow endpoint does not hold back healthy ones -------------------------------------------


@pytest.mark.django_db(transaction=True)  # the watcher thread reads what the dispatcher committed
def test_a_hanging_endpoint_does_not_hold_back_healthy_deliveries(receiver, settings):
    import threading
    import time

    settings.OUTBOX_DELIVERY_CONCURRENCY, settings.OUTBOX_CLAIM_ROUNDS = 4, 2
    settings.WEBHOOK_CONNECT_TIMEOUT, settings.WEBHOOK_READ_TIMEOUT, settings.OUTBOX_LEASE_SECONDS = 1.0, 10.0, 30
    hanging = create_endpoint(url=receiver.plan("/hang", ["hold"]), event_types=["slow.*"])
    healthy = create_endpoint(url=receiver.plan("/ok", [200]), event_types=["file.*"])
    with transaction.atomic():
        emit(key="slow", event_type="slow.event")  # due first: it is in the very first claim
        for i in range(40):
            emit(key=f"k{i}")
    seen = {}

    def watch():
        # While the hanging request is still open, wait (up to 8 s of its 10 s read timeout) for the
        # 40 healthy deliveries to be received AND recorded, then let it answer.
        from django.db import connection as thread_connection

        try:
            assert receiver.held.wait(5)
            until = time.monotonic() + 8
            while time.monotonic() < until:
                received = len(receiver.received("/ok"))
                delivered = WebhookDelivery.objects.filter(endpoint=healthy, status=DeliveryStatus.DELIVERED).count()
                if received == delivered == 40:
                    break
                time.sleep(0.05)
            seen.update(received=received, delivered=delivered, hang_open=not receiver.released.is_set())
        finally:
            receiver.release()
            thread_connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    result = deliver_due(limit=100, time_budget=15)
    watcher.join()

    assert seen == {"received": 40, "delivered": 40, "hang_open": True}
    assert result["delivered"] == 41
    assert WebhookDelivery.objects.get(endpoint=hanging).status == DeliveryStatus.DELIVERED
