"""Real dispatcher processes: concurrent draining without double sends, and redelivery after a crash."""

from __future__ import annotations

import sys
import time
from collections import Counter

import pytest

from common.outbox.models import DeliveryAttempt, WebhookDelivery
from common.outbox.services.delivery.dispatcher import deliver_due
from common.outbox.services.endpoints import create_endpoint
from tests.outbox.emitting import emit_many
from tests.processes import PROJECT_DIR

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

DELIVER = [sys.executable, str(PROJECT_DIR / "manage.py"), "outbox_deliver", "--drain"]


def test_three_concurrent_dispatcher_processes_send_each_webhook_id_exactly_once(receiver, start_process, clean_broker):
    n = 1200
    create_endpoint(url=receiver.plan("/hook", [200]))
    emit_many(n)

    procs = [
        start_process(f"dispatcher{i}", [*DELIVER, "--batch", "100"], OUTBOX_DELIVERY_CONCURRENCY="4") for i in range(3)
    ]
    for proc in procs:
        assert proc.popen.wait(timeout=120) == 0, proc.output()[-3000:]

    ids = Counter(r["headers"]["webhook-id"] for r in receiver.received("/hook"))
    assert len(ids) == n
    assert [i for i, c in ids.items() if c != 1] == []  # no lease expired here, so exactly once
    assert WebhookDelivery.objects.filter(status="delivered").count() == n
    assert DeliveryAttempt.objects.count() == n
    # Each process did part of the work: the claims really interleaved.
    shares = [int(__import__("json").loads(p.output().strip().splitlines()[-1])["delivered"]) for p in procs]
    assert sum(shares) == n and sum(1 for s in shares if s > 0) >= 2, shares


def test_dispatcher_killed_mid_send_is_redelivered_after_its_lease_with_the_same_webhook_id(
    receiver, start_process, clean_broker
):
    endpoint = create_endpoint(url=receiver.plan("/hold", ["hold", 200]))
    emit_many(1)
    env = {"OUTBOX_LEASE_SECONDS": "4", "WEBHOOK_CONNECT_TIMEOUT": "1", "WEBHOOK_READ_TIMEOUT": "2"}
    proc = start_process("doomed", DELIVER, **env)
    assert receiver.held.wait(60), proc.output()
    proc.kill_group()  # kill -9 while the receiver holds the request open
    killed_at = time.monotonic()

    # The lease still stands: nobody else may send it now.
    assert deliver_due(limit=10, time_budget=5)["processed"] == 0
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == "pending" and delivery.leased_until is not None and delivery.attempt_count == 0

    deadline = time.monotonic() + 20
    while len(receiver.received("/hold")) < 2 and time.monotonic() < deadline:
        deliver_due(limit=10, time_budget=5)
        time.sleep(0.3)
    first, second = receiver.received("/hold")
    assert time.monotonic() - killed_at >= 3  # not before the lease ran out
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    assert first["body"] == second["body"]
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempt_count == 1  # the killed attempt left no record
