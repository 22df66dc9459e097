"""A worker keeps its database connection between tasks (no reconnect per webhook delivery run)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from common.outbox.models import WebhookDelivery
from common.outbox.services.emit import emit_event
from common.outbox.services.endpoints import create_endpoint
from tests.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def task_connections() -> set[int]:
    """Backends (not ours) whose last query was a delivery task's, i.e. the worker child's Django connection."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND (query LIKE '%%common_webhookdelivery%%' OR query LIKE '%%django_celery_results%%')"
        )
        return {row[0] for row in cursor.fetchall()}


def deliver_one(key: str, receiver) -> None:
    with transaction.atomic():
        emit_event(event_type="file.stored", aggregate_type="upload", aggregate_id=key, payload={}, idempotency_key=key)
    wait_until(lambda: WebhookDelivery.objects.filter(status="delivered").count() == int(key), 30, f"delivery {key}")
    wait_until(lambda: len(receiver.received("/hook")) == int(key), 10, f"receipt {key}")


def test_worker_reuses_its_database_connection_across_tasks(receiver, start_worker):
    create_endpoint(url=receiver.plan("/hook", [200]))
    start_worker(queues="high", concurrency=1)

    deliver_one("1", receiver)
    first = wait_until(task_connections, 10, "the worker's connection to stay open after its task")
    for key in ("2", "3", "4"):
        deliver_one(key, receiver)

    # Celery's Django fixup alone would close it after every task and open a new one for the next.
    assert task_connections() == first
