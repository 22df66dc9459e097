"""Outgrowing Postgres: the same worker and tasks over RabbitMQ, by setting CELERY_BROKER_URL only."""

from __future__ import annotations

import socket

import pytest
from django_celery_results.models import TaskResult

from boot.celery import app as celery_app
from tests.processes import wait_until

pytestmark = pytest.mark.integration

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def rabbitmq_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not rabbitmq_reachable(), reason="RabbitMQ is not reachable at 127.0.0.1:5672")
def test_worker_runs_project_tasks_over_rabbitmq(start_worker):
    worker = start_worker(queues="high,default", CELERY_BROKER_URL=AMQP_URL)
    assert "amqp://guest:**@127.0.0.1:5672//" in worker.output()
    with celery_app.connection_for_write(AMQP_URL) as conn:
        sent = [
            celery_app.send_task("common.tasks.heartbeat", queue=queue, connection=conn)
            for queue in ("default", "high")
        ]
    wait_until(
        lambda: TaskResult.objects.filter(task_id__in=[r.id for r in sent], status="SUCCESS").count() == 2,
        60,
        "both heartbeats over RabbitMQ",
    )
