"""A result PostgreSQL refuses (a NUL byte, a vanished row) never blocks recording the rest."""

from __future__ import annotations

import pytest

from common.outbox.models import DeliveryAttempt, DeliveryStatus, WebhookDelivery
from common.outbox.services.delivery import dispatcher as delivery
from common.outbox.services.delivery.claim import claim_due_deliveries
from common.outbox.services.delivery.dispatcher import deliver_due
from common.outbox.services.delivery.record import record_attempts, storable_text
from common.outbox.services.delivery.send import send
from common.outbox.services.endpoints import create_endpoint
from tests.outbox.emitting import emit

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


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
def test_a_batch_the_database_refuses_is_recorded_row_by_row(receiver, clean_broker):
    # clean_broker: the nudges wait in the broker, so this test's own dispatcher does the delivering.
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

    assert storable_text("a\x00b\x00") == "a\ufffdb\ufffd"
