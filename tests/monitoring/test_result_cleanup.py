"""Expired task results are deleted in batches, and beat schedules that cleanup on a consumed queue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_results.models import GroupResult, TaskResult

from boot.celery import app as celery_app
from common.monitoring.result_backend import BatchedCleanupDatabaseBackend
from common.monitoring.services.result_cleanup import delete_expired_results
from tests.processes import wait_until


def make_results(count: int, *, age: timedelta, prefix: str) -> None:
    done = timezone.now() - age
    TaskResult.objects.bulk_create(
        [TaskResult(task_id=f"{prefix}-{i}", status="SUCCESS", date_done=done) for i in range(count)]
    )
    # date_done is auto_now: set it after the insert.
    TaskResult.objects.filter(task_id__startswith=prefix).update(date_done=done)


@pytest.mark.django_db
def test_cleanup_deletes_only_expired_results_in_batches():
    make_results(25, age=timedelta(hours=2), prefix="old")
    make_results(3, age=timedelta(minutes=1), prefix="new")
    GroupResult.objects.create(group_id="old-group")
    GroupResult.objects.filter(group_id="old-group").update(date_done=timezone.now() - timedelta(hours=2))

    report = delete_expired_results(expires_seconds=3600, batch_size=10)

    assert report == {"tasks_deleted": 25, "groups_deleted": 1, "batches": 4}
    assert sorted(TaskResult.objects.values_list("task_id", flat=True)) == ["new-0", "new-1", "new-2"]
    assert not GroupResult.objects.exists()


@pytest.mark.django_db
def test_bad_batch_size_is_refused():
    with pytest.raises(ValueError, match="batch_size"):
        delete_expired_results(expires_seconds=60, batch_size=-1)


def test_the_configured_backend_batches_its_cleanup():
    assert isinstance(celery_app.backend, BatchedCleanupDatabaseBackend)
    assert celery_app.conf.beat_schedule["cleanup-task-results"]["task"] == "celery.backend_cleanup"
    assert celery_app.amqp.router.route({}, "celery.backend_cleanup")["queue"].name == "default"


@pytest.mark.integration
def test_beat_scheduled_cleanup_runs_on_the_default_queue_and_removes_expired_results(start_worker, start_beat):
    make_results(30, age=timedelta(hours=3), prefix="stale")
    make_results(2, age=timedelta(seconds=0), prefix="fresh")
    env = {"RESULT_CLEANUP_INTERVAL": "2", "RESULT_CLEANUP_BATCH_SIZE": "7", "CELERY_RESULT_EXPIRES": "3600"}
    worker = start_worker(queues="default", concurrency=1, **env)  # consumes `default` only
    start_beat(**env)

    wait_until(lambda: not TaskResult.objects.filter(task_id__startswith="stale").exists(), 60, "expired results gone")
    assert TaskResult.objects.filter(task_id__startswith="fresh").count() == 2
    worker.wait_for_output(r"task succeeded: celery\.backend_cleanup\[[^\]]+\] queue=default")
    worker.wait_for_output(r"results\.cleanup")
