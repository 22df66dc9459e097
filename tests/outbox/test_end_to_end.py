"""End to end with a real worker and beat: the post-commit nudge on `high`, and the beat sweep as safety net."""

from __future__ import annotations

import time

import pytest
from django.db import connection, transaction
from django_celery_results.models import TaskResult

from common.outbox.models import WebhookDelivery
from common.outbox.services.endpoints import create_endpoint
from tests.outbox.emitting import emit
from tests.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_committed_event_reaches_the_receiver_through_a_worker_on_the_high_queue(receiver, start_worker):
    create_endpoint(url=receiver.plan("/hook", [200]))
    start_worker(queues="high")  # only `high`: the nudge must be routed there

    with transaction.atomic():  # the nudge is written in the emitting transaction
        event = emit("e2e")

    wait_until(lambda: receiver.received("/hook"), 60, "the webhook")
    assert receiver.received("/hook")[0]["headers"]["webhook-id"] == event.webhook_id
    wait_until(lambda: WebhookDelivery.objects.filter(status="delivered").exists(), 10, "the delivery row")
    # The result is stored when the task returns, a moment after the delivery row is written.
    result = wait_until(
        lambda: TaskResult.objects.filter(
            task_name="common.tasks.deliver_outbox_events_task", status="SUCCESS"
        ).first(),
        10,
        "the task's result",
    )
    assert set(__import__("json").loads(result.result)) == {"processed", "delivered", "failed", "remaining"}


def test_lost_nudge_is_delivered_by_the_beat_sweep(receiver, start_worker, start_beat):
    create_endpoint(url=receiver.plan("/hook", [200]))
    with transaction.atomic():
        emit("lost")  # committed while no worker runs: the nudge waits in the broker...
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE kombu_message")  # ...and is lost
    time.sleep(1)
    assert receiver.received("/hook") == []

    start_worker(queues="high", OUTBOX_SWEEP_INTERVAL_SECONDS="1")
    start_beat(OUTBOX_SWEEP_INTERVAL_SECONDS="1")

    wait_until(lambda: receiver.received("/hook"), 60, "the sweep to deliver")
    assert len(receiver.received("/hook")) == 1
