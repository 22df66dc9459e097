"""Real workers on the transport: exactly-once drain, fork safety, crash redelivery, nothing left behind."""

from __future__ import annotations

import datetime
import time

import pytest
from django.db import connection

from common.broker.models import CancelledTask
from common.broker.services.cancel import CancelOutcome, cancel_queued_task
from tests.broker.conftest import claimed_rows, message_rows, scheduled_rows
from tests.broker.tasks import record, slow_once, spawn
from tests.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_two_workers_drain_5000_messages_each_task_exactly_once(start_test_worker, runs):
    tokens = [f"t{n}" for n in range(5000)]
    for token in tokens:
        record.delay(token)
    first, second = start_test_worker(), start_test_worker()

    wait_until(lambda: runs.total() >= 5000, 180, "5,000 runs")
    wait_until(lambda: message_rows() == 0, 30, "an empty kombu_message after the drain")
    counts = runs.counts()
    assert set(counts) == set(tokens)
    assert {token: n for token, n in counts.items() if n != 1} == {}
    # Both workers took part (each logs the tasks it received).
    assert "tests.broker.tasks.record" in first.output() and "tests.broker.tasks.record" in second.output()


@pytest.mark.parametrize("pool", ["prefork", "solo", "threads"])
def test_every_pool_consumes_in_the_event_loop_each_task_once_woken_without_a_poll(start_test_worker, runs, pool):
    # Celery consumes from this transport in its event loop whatever the pool (solo runs each task inside the
    # loop's tick, threads ack from other threads); the 30-s poll would make the waits below time out.
    worker = start_test_worker("-P", pool, BROKER_POLLING_INTERVAL="30")
    for n in range(40):
        record.delay(f"{pool}{n}")
    wait_until(lambda: runs.total() >= 40, 60, f"40 runs in a {pool} worker")
    wait_until(lambda: message_rows() == 0, 30, "every message acked")
    time.sleep(1)  # the worker now sleeps on LISTEN: a new publish must wake it
    record.delay("late")
    wait_until(lambda: runs.counts().get("late"), 10, "the late task (woken by NOTIFY, not the poll)")
    assert set(runs.counts().values()) == {1}
    assert "asynloop" not in worker.output()  # no traceback from the loop
    assert "Transport._on_tick" not in worker.output()


def test_prefork_children_replaced_after_every_task_can_publish_tasks(start_test_worker, runs):
    worker = start_test_worker("--max-tasks-per-child=1")
    spawn.delay("root", 3)  # 1 + 2 + 4 + 8 = 15 tasks, each published by a freshly forked child

    wait_until(lambda: runs.total() >= 15, 120, "the whole tree of spawned tasks")
    wait_until(lambda: message_rows() == 0, 30, "an empty kombu_message")
    counts = runs.counts()
    assert len(counts) == 15 and set(counts.values()) == {1}
    assert worker.popen.poll() is None, worker.output()[-3000:]
    assert "ResourceClosedError" not in worker.output() and "Traceback" not in worker.output()


def test_kill_9_during_an_acks_late_task_runs_it_again_after_the_visibility_timeout(start_test_worker, runs):
    short = {"BROKER_VISIBILITY_TIMEOUT": "5", "CELERY_TASK_TIME_LIMIT": "4", "CELERY_TASK_SOFT_TIME_LIMIT": "3"}
    doomed = start_test_worker(**short)
    slow_once.delay("crash", 3.5)
    wait_until(lambda: runs.counts("start").get("crash"), 30, "the first run to start")
    doomed.kill_group()  # the whole worker dies mid-task, as on a machine crash
    assert message_rows() == 1  # still in the table, claimed by the dead worker

    start_test_worker(**short)
    wait_until(lambda: runs.counts("done").get("crash"), 60, "the task to run again and finish")
    wait_until(lambda: message_rows() == 0, 30, "the redelivered message to be acked")
    assert runs.counts("start") == {"crash": 2} and runs.counts("done") == {"crash": 1}


def eta_start_delays() -> list[float]:
    """Seconds from each run's ETA (the token is its epoch) to its start."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT extract(epoch FROM at) - token::float FROM broker_test_runs WHERE kind = 'run'")
        return [float(delay) for (delay,) in cursor.fetchall()]


def test_eta_tasks_wait_in_the_database_survive_a_worker_restart_and_start_on_time(start_test_worker, runs):
    first = start_test_worker()
    etas = [time.time() + 25 + n for n in range(5)]
    for eta in etas:
        record.apply_async((repr(eta),), eta=datetime.datetime.fromtimestamp(eta, datetime.UTC))
    time.sleep(2)
    # Not delivered to the worker: the messages wait as scheduled rows, unclaimed.
    assert scheduled_rows() == 5 and claimed_rows() == 0 and " received" not in first.output()
    first.stop()  # a restart: nothing to redeliver, the worker held none of them
    start_test_worker()

    wait_until(lambda: runs.total() >= 5, 60, "the ETA tasks to run")
    wait_until(lambda: message_rows() == 0, 30, "every message acked")
    assert runs.counts() == {repr(eta): 1 for eta in etas}
    delays = eta_start_delays()
    print(f"ETA -> start (s): {[round(d, 3) for d in sorted(delays)]}")
    assert all(0 <= delay < 1 for delay in delays), delays  # due tasks start within 1 s of their ETA


def test_cancel_an_eta_task_waiting_in_the_database(start_test_worker, runs):
    start_test_worker()
    doomed = record.apply_async(("eta-cancelled",), countdown=6)
    kept = record.apply_async(("eta-kept",), countdown=6)
    assert scheduled_rows() == 2
    assert cancel_queued_task(task_id=doomed.id) is CancelOutcome.CANCELLED  # its row is gone: no mark needed

    wait_until(lambda: runs.counts().get("eta-kept"), 40, "the kept ETA task to run")
    wait_until(lambda: message_rows() == 0, 30, "the kept message to be acked")
    time.sleep(1)
    assert runs.counts() == {"eta-kept": 1} and not CancelledTask.objects.exists()
    assert cancel_queued_task(task_id=kept.id) is CancelOutcome.NOT_FOUND


def scheduled_row_versions() -> set[tuple]:
    """(id, xmin) of every scheduled row: any write to a row (claim, lease renewal, rescue) changes its xmin."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, xmin::text FROM kombu_message WHERE NOT visible AND version = -2")
        return set(cursor.fetchall())


def test_countdown_tasks_wait_untouched_by_a_running_worker_neither_delivered_nor_written(start_test_worker, runs):
    worker = start_test_worker()
    for n in range(200):
        record.apply_async((f"later{n}",), countdown=3600)
    waiting = scheduled_row_versions()
    assert len(waiting) == 200
    record.apply_async(("now",))
    wait_until(lambda: runs.counts().get("now"), 30, "the worker to run a ready task")
    time.sleep(3)  # at least two rescue passes of the worker's keeper thread (one per second)
    # Not claimed, renewed or rewritten by anything, and never handed to the worker: nothing in its memory.
    assert scheduled_row_versions() == waiting
    assert worker.output().count(" received") == 1 and runs.counts() == {"now": 1}
