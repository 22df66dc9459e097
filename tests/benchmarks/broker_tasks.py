"""Tasks for tests/benchmarks/broker.py, loaded into its workers with `celery -A boot worker -I ...`."""

import time

from celery import shared_task
from django.db import connection


@shared_task(name="tests.benchmarks.broker_tasks.noop", ignore_result=True)
def noop() -> None:
    """Nothing: the drain measures the broker and Celery, not the task."""


@shared_task(name="tests.benchmarks.broker_tasks.latency", ignore_result=True)
def latency(sent_at: float) -> None:
    """Record how long after `sent_at` (time.time() at publish) this task started."""
    started = time.time() - sent_at
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_broker_latency (seconds) VALUES (%s)", [started])
