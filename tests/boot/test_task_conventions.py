"""Every task of ours follows the reference's conventions; an unexpected error is logged and retried."""

from __future__ import annotations

import inspect
import logging

import pytest

import portal.tasks
from boot.celery import app
from boot.celery import heartbeat as heartbeat_from_boot
from tests.processes import wait_until

OURS = ("common.", "portal.")
ROWS_WITH_SECONDS_UNTIL_DUE = (
    "SELECT version, extract(epoch FROM timestamp - now() AT TIME ZONE 'UTC')::float FROM kombu_message"
)


def our_tasks():
    app.loader.import_default_modules()
    return {name: task for name, task in app.tasks.items() if name.startswith(OURS)}


def test_every_task_of_ours_is_bound_with_the_retry_options():
    tasks = our_tasks()
    assert {
        "common.tasks.heartbeat",
        "common.tasks.deliver_outbox_events_task",
        "common.tasks.cleanup_delivered_outbox_events_task",
        "common.broker.tasks.cleanup_broker_messages_task",
        "portal.tasks.cleanup_expired_upload_files_task",
        "portal.tasks.notify_expiring_files_task",
    } <= set(tasks)
    for name, task in tasks.items():
        assert inspect.ismethod(task.run), f"{name}: bind=True"
        assert (task.max_retries, task.default_retry_delay) == (2, 60), name


def test_heartbeat_is_importable_from_boot_celery_and_by_name():
    assert heartbeat_from_boot.name == "common.tasks.heartbeat" and "common.tasks.heartbeat" in app.tasks
    result = heartbeat_from_boot.apply()
    assert result.get() == {"ok": True}


def test_run_inline_an_unexpected_error_is_logged_with_its_traceback_and_reaches_the_caller(monkeypatch, caplog, db):
    def broken() -> dict:
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(portal.tasks, "notify_expiring_files", broken)
    with caplog.at_level(logging.INFO, logger="portal.tasks"), pytest.raises(RuntimeError, match="database hiccup"):
        portal.tasks.notify_expiring_files_task.apply(throw=True).get()
    (failed,) = [r for r in caplog.records if r.name == "portal.tasks" and r.levelno == logging.ERROR]
    assert failed.exc_info and "notify_expiring_files_task failed (attempt 1 of 3)" in failed.getMessage()


def test_success_is_logged_at_info(caplog, db):
    with caplog.at_level(logging.INFO, logger="portal.tasks"):
        assert portal.tasks.notify_expiring_files_task.apply().get() == {"notified": 0, "skipped": 0}
    assert any(
        r.levelno == logging.INFO and r.getMessage().startswith("portal.tasks.notify_expiring_files_task done")
        for r in caplog.records
    )


@pytest.mark.integration
def test_on_a_worker_an_unexpected_error_is_retried_in_60_seconds(start_worker, clean_broker):
    from django.db import connection

    from common.outbox.tasks import cleanup_delivered_outbox_events_task

    with connection.cursor() as cursor:  # the cleanup's query fails until the table is back
        cursor.execute("ALTER TABLE common_outboxevent RENAME TO common_outboxevent_away")
    try:
        worker = start_worker(queues="default", concurrency=1)
        cleanup_delivered_outbox_events_task.apply_async()
        worker.wait_for_output(r"cleanup_delivered_outbox_events_task failed \(attempt 1 of 3\)", timeout=60)
        text = worker.wait_for_output(r"task retried: common\.tasks\.cleanup_delivered_outbox_events_task", timeout=30)
        assert "Traceback" in text and "common_outboxevent" in text

        def rows() -> list[tuple[int, float]]:
            with connection.cursor() as cursor:
                cursor.execute(ROWS_WITH_SECONDS_UNTIL_DUE)
                return cursor.fetchall()

        # The failed attempt's row is deleted by its ack, which follows the retry's publish, so wait for it;
        # what remains is the retry, scheduled (version -2) about 60 s ahead.
        wait_until(lambda: len(rows()) == 1, timeout=30, what="the failed attempt's message to be acked")
        [(version, seconds_until_due)] = rows()
        assert version == -2 and 30 < seconds_until_due <= 60
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE common_outboxevent_away RENAME TO common_outboxevent")
