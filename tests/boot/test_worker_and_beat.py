"""A real worker and a real beat, through the PostgreSQL broker and django-celery-results."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from common.monitoring.tasks import heartbeat
from tests.processes import wait_until

pytestmark = pytest.mark.integration


def queued_payloads(queue: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT m.payload FROM kombu_message m JOIN kombu_queue q ON q.id = m.queue_id "
            "WHERE q.name = %s AND m.visible",
            [queue],
        )
        return [row[0] for row in cursor.fetchall()]


def test_worker_consumes_default_and_high_through_kombu_message(start_worker):
    on_default = heartbeat.delay()
    on_high = heartbeat.apply_async(queue="high")
    # Both messages sit in PostgreSQL before any worker exists.
    assert any(on_default.id in p for p in queued_payloads("default"))
    assert any(on_high.id in p for p in queued_payloads("high"))

    worker = start_worker()

    assert on_default.get(timeout=60) == {"ok": True}
    assert on_high.get(timeout=60) == {"ok": True}
    stored = TaskResult.objects.get(task_id=on_high.id)
    assert stored.status == "SUCCESS" and stored.task_name == "common.tasks.heartbeat"
    assert queued_payloads("default") == [] and queued_payloads("high") == []
    worker.wait_for_output("celery.heartbeat", count=2)


def test_beat_schedules_from_database_and_picks_up_changes_live(start_worker, start_beat):
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="hb-default", task="common.tasks.heartbeat", interval=every_second)
    start_worker()
    start_beat()

    def results_for(name):
        return TaskResult.objects.filter(periodic_task_name=name, status="SUCCESS").count()

    wait_until(lambda: results_for("hb-default") >= 2, 60, "beat-scheduled heartbeats")

    # A schedule added in the database while beat runs takes effect without a restart.
    PeriodicTask.objects.create(
        name="hb-high",
        task="common.tasks.heartbeat",
        interval=every_second,
        queue="high",
        exchange="high",
        routing_key="high",
    )
    wait_until(lambda: results_for("hb-high") >= 2, 60, "a schedule added at runtime")

    # Disabling it in the database stops it, again without a restart.
    PeriodicTask.objects.filter(name="hb-high").update(enabled=False)
    PeriodicTask.objects.filter(name="hb-high").first().save()  # bumps django-celery-beat's change marker
    time.sleep(3)
    settled = results_for("hb-high")
    time.sleep(4)
    assert results_for("hb-high") <= settled + 1
