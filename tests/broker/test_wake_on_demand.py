"""Producers wake consumers only while one may be asleep: real workers arm kombu_queue.wake_wanted_until, and each
wake-up clears it until a consumer sleeps again."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
from django.db import connection, transaction
from kombu import Consumer

from common.broker import sql
from common.broker.services.transactional import enqueue_in_transaction
from common.broker.waker import process_waker
from tests.broker.conftest import QUEUE, listening, message_rows, notifications, publish
from tests.broker.tasks import record
from tests.processes import celery_command, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Far longer than any test below waits for a task: only a NOTIFY can start one in time.
LONG_POLL = {"BROKER_POLLING_INTERVAL": "30"}


def flag_of(queue_id: int) -> object:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wake_wanted_until FROM kombu_queue WHERE id = %s", [queue_id])
        return cursor.fetchone()[0]


def start_delays(tokens: dict[str, float]) -> dict[str, float]:
    """Seconds from each token's publish (epoch seconds, as given) to its run's start, for those that ran."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT token, extract(epoch FROM at) FROM broker_test_runs WHERE token = ANY(%s)", [list(tokens)]
        )
        return {token: float(at) - tokens[token] for token, at in cursor.fetchall()}


def wake_wanted_until(queue: str = "default") -> object:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wake_wanted_until FROM kombu_queue WHERE name = %s", [queue])
        row = cursor.fetchone()
    return row and row[0]


def armed(queue: str = "default") -> bool:
    """Whether the queue's flag lies ahead: producers wake its consumers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT wake_wanted_until > now() AT TIME ZONE 'UTC' FROM kombu_queue WHERE name = %s", [queue])
        row = cursor.fetchone()
    return bool(row and row[0])


def test_a_sleeping_worker_is_woken_by_each_of_a_series_of_publishes_and_arms_again_after_each_wake_up(
    start_test_worker, runs
):
    # Polling every 5 s, a worker arms its flag for 11 s (2 x 5 + 1) and re-arms once less than 5 s are left.
    # Each wake-up clears the flag: publishes 2 s after one rely on the worker having armed again at once (its
    # own last arm still holds, so only the NOTIFY tells it to), and the 12-s pause outlasts a whole hold, so
    # the publish after it relies on a re-arm made while the worker slept.
    start_test_worker(BROKER_POLLING_INTERVAL="5")
    wait_until(wake_wanted_until, 30, "the idle worker to arm its queue's flag")
    published: dict[str, float] = {}
    flags = []
    armed_before: list[bool] = []
    for n, pause in enumerate((0, 2, 2, 12, 2)):
        time.sleep(pause)
        flags.append(wake_wanted_until())
        armed_before.append(armed())
        token = f"wake{n}"
        published[token] = time.time()
        record.delay(token)
        wait_until(lambda token=token: runs.counts().get(token), 10, f"{token} to run")
    delays = start_delays(published)
    print(f"publish -> start (s): {[round(d, 3) for d in delays.values()]}; armed before each: {armed_before}")
    assert all(armed_before), armed_before  # the worker armed again after each wake-up, before it slept
    # A 5 s poll would start most of them later than this (and all five within 1 s by chance once in 3,000).
    assert all(delay < 1 for delay in delays.values()), delays
    assert len(set(flags)) >= 4, flags  # re-armed after each wake-up and while idle


def test_publishes_committed_just_after_a_worker_armed_are_claimed_without_waiting_for_the_poll(
    start_process, runs, test_database_url
):
    # Real messages for the producers below: published with no worker, then taken out of the queue again.
    token_of = {record.delay(f"race{n}").id: f"race{n}" for n in range(5)}
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM kombu_message RETURNING payload, queue_id")
        messages = cursor.fetchall()
        cursor.execute("UPDATE kombu_queue SET wake_wanted_until = NULL")  # no consumer asleep
    assert len(messages) == len(token_of)
    # Each producer's INSERT runs before the worker arms its queue: it reads the flag as unset, so it sends no
    # NOTIFY; it commits only once the worker has armed (as a producer stalled inside its INSERT would).
    producers = [psycopg.connect(test_database_url) for _ in messages]
    try:
        for producer, (payload, queue_id) in zip(producers, messages, strict=True):
            producer.execute(sql.SESSION_SETUP)  # one of this transport's sessions: the insert trigger is silent
            [(asleep,)] = producer.execute(sql.INSERT_MESSAGE, {"payload": payload, "queue": queue_id}).fetchall()
            assert asleep is False
        # Not waiting for "ready.": the worker arms at its first sleep, and the commits must follow at once.
        start_process("racedworker", celery_command(
            "worker", "-I", "tests.broker.tasks", "-Q", "high,default", "-n", "racedworker@%h", "-c", "2",
            "--loglevel", "INFO",
        ), **LONG_POLL)  # fmt: skip
        wait_until(wake_wanted_until, 90, "the worker to arm its queue's flag", interval=0.002)
        committed: dict[str, float] = {}
        for producer, (payload, _queue) in zip(producers, messages, strict=True):  # a few ms apart
            producer.commit()
            committed[token_of[json.loads(payload)["headers"]["id"]]] = time.time()
            time.sleep(0.005)
    finally:
        for producer in producers:
            producer.close()
    wait_until(lambda: runs.total() >= len(committed), 40, "the raced tasks to run")
    delays = start_delays(committed)
    print(f"commit -> start (s): {[round(d, 3) for d in delays.values()]}")
    # The 30 s poll would start none of them this soon: the worker's claims after its arm did.
    assert sorted(delays) == sorted(committed) and all(delay < 1 for delay in delays.values()), delays


def test_after_one_wake_up_publishes_send_no_notify_until_a_consumer_arms_again(connect, test_database_url):
    conn = connect()
    publish(conn, {"n": -1})  # declares the queue
    with psycopg.connect(test_database_url, autocommit=True) as consumer, listening(test_database_url) as listener:
        [(queue_id,)] = consumer.execute("SELECT id FROM kombu_queue WHERE name = %s", [QUEUE.name]).fetchall()

        def arm() -> bool:  # as a consumer about to sleep: whether it found the flag unset
            [(_queue, _ahead, was_unset)] = consumer.execute(
                sql.ARM_WAKE, {"queues": [queue_id], "hold": 60}
            ).fetchall()
            return was_unset

        assert arm() is True
        woken, flags, found_unset = [], [], []
        for round_ in range(2):
            if round_:
                # A consumer woken arms again before it sleeps: it finds the flag unset, so it claims once more.
                found_unset.append(arm())
            for n in range(10):  # each sent and woken before the next: the waker coalesces nothing here
                publish(conn, {"n": n})
                assert process_waker().flush(timeout=5)
            woken.append(notifications(listener))
            flags.append(flag_of(queue_id))
    # One NOTIFY per arm, not one per publish (twenty, before the wake-up cleared the flag).
    assert woken == [[str(queue_id)], [str(queue_id)]]
    assert flags == [None, None] and found_unset == [True]  # each wake-up cleared it
    assert message_rows() == 21


def test_an_arm_racing_a_wake_up_that_clears_the_flag_reports_it_unset(test_database_url, clean_broker):
    with psycopg.connect(test_database_url, autocommit=True) as db:
        [(queue_id,)] = db.execute(sql.QUEUE_ID, {"name": QUEUE.name}).fetchall()
        # Armed, 2 s left: not within a second of running out, but due for a re-arm (under half of an 11-s hold).
        db.execute(
            "UPDATE kombu_queue SET wake_wanted_until = now() AT TIME ZONE 'UTC' + interval '2 seconds' WHERE id = %s",
            [queue_id],
        )
        with psycopg.connect(test_database_url) as waking:  # a wake-up whose transaction has not committed yet
            waking.execute(sql.WAKE_QUEUES, ([queue_id],))
            arms: list[list[tuple]] = []
            arming = threading.Thread(
                target=lambda: arms.append(db.execute(sql.ARM_WAKE, {"queues": [queue_id], "hold": 11}).fetchall())
            )
            arming.start()
            time.sleep(0.5)  # the arm's snapshot still shows the flag armed; its UPDATE waits for the wake-up's
            assert arming.is_alive()
            waking.commit()
            arming.join(timeout=10)
    # Producers whose INSERT ran between the two commits read the flag unset and sent nothing: the arm must say
    # so, so its consumer claims again after it (its snapshot alone would say it was armed).
    [[(_queue, ahead, was_unset)]] = arms
    assert was_unset is True and 10 < ahead <= 11


def test_a_consumer_whose_listen_session_was_replaced_arms_again(connect, test_database_url):
    conn = connect(polling_interval=60)
    received = []
    with Consumer(conn, [QUEUE], callbacks=[lambda body, m: (received.append(body), m.ack())]):
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.3)  # asleep: it armed its queue's flag for two minutes
        [queue_id] = list(conn.transport._armed_until)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [conn.transport._listener.info.backend_pid])
        with psycopg.connect(test_database_url, autocommit=True) as other:
            other.execute(sql.WAKE_QUEUES, ([queue_id],))  # a wake-up it never hears: the flag is cleared
        assert flag_of(queue_id) is None
        with pytest.raises(TimeoutError):  # the session is replaced inside drain_events, and the flag armed again
            conn.drain_events(timeout=1)
        assert flag_of(queue_id) is not None
        publish(connect(), {"n": 1})
        conn.drain_events(timeout=5)  # woken by a NOTIFY on the new session (the poll is 60 s away)
    assert received == [{"n": 1}]


def test_two_workers_asleep_on_one_queue_keep_being_woken_after_one_of_them_was(start_process, runs):
    # Two workers, each polling every 30 s, both asleep on "default". Each publish's wake-up clears the flag and
    # wakes both; one runs the task, and both arm again before they sleep again. Each publish waits until the
    # flag was armed again and both had time to fall asleep: only a NOTIFY can start it within a second.
    workers = []
    for name in ("sleeperone", "sleepertwo"):
        workers.append(start_process(name, celery_command(
            "worker", "-I", "tests.broker.tasks", "-Q", "high,default", "-n", f"{name}@%h", "-c", "1",
            "--loglevel", "INFO",
        ), **LONG_POLL))  # fmt: skip
    for worker in workers:
        worker.wait_for_output(r"ready\.", timeout=90)
    published: dict[str, float] = {}
    for n in range(6):
        wait_until(armed, 10, "a worker to arm the queue again")
        time.sleep(0.5)  # both back asleep on LISTEN
        token = f"pair{n}"
        published[token] = time.time()
        record.delay(token)
        wait_until(lambda token=token: runs.counts().get(token), 40, f"{token} to run")
    delays = start_delays(published)
    received = [worker.output().count("] received") for worker in workers]
    print(f"publish -> start (s): {[round(d, 3) for d in delays.values()]}; tasks received per worker: {received}")
    assert all(delay < 1 for delay in delays.values()), delays


def test_of_concurrent_publishes_that_read_the_flag_armed_only_the_first_sends_a_wake_up(
    test_database_url, clean_broker
):
    # Two producer processes' publishes, both begun while a consumer's flag is armed. Before, each read the flag
    # armed and each process's waker sent a wake-up of its own (about ten per arm with 32 producer processes).
    with psycopg.connect(test_database_url, autocommit=True) as db:
        [(queue_id,)] = db.execute(sql.QUEUE_ID, {"name": QUEUE.name}).fetchall()
        db.execute(sql.ARM_WAKE, {"queues": [queue_id], "hold": 60})
    with psycopg.connect(test_database_url) as first, psycopg.connect(test_database_url, autocommit=True) as second:
        [(first_wakes,)] = first.execute(sql.INSERT_MESSAGE, {"payload": "{}", "queue": queue_id}).fetchall()
        second_wakes: list[bool] = []
        publishing = threading.Thread(
            target=lambda: second_wakes.extend(
                row[0] for row in second.execute(sql.INSERT_MESSAGE, {"payload": "{}", "queue": queue_id})
            )
        )
        publishing.start()
        time.sleep(0.3)  # the second's snapshot shows the flag armed: it waits for the first to commit
        first.commit()
        publishing.join(timeout=10)
    assert (first_wakes, second_wakes) == (True, [False])
    assert flag_of(queue_id) is None and message_rows() == 2


def test_a_publish_in_a_django_transaction_leaves_the_flag_and_its_row_to_the_consumers(
    test_database_url, clean_broker
):
    # A Django transaction may last long: its publish must not lock the queue's row (a consumer arming before it
    # sleeps would wait for the caller's commit) nor disarm the flag (its NOTIFY comes from the insert trigger,
    # at commit).
    with psycopg.connect(test_database_url, autocommit=True) as consumer, listening(test_database_url) as listener:
        [(queue_id,)] = consumer.execute(sql.QUEUE_ID, {"name": "default"}).fetchall()
        consumer.execute("SET lock_timeout = '2s'")
        flag = "now() AT TIME ZONE 'UTC' + interval '2 seconds'"  # due for a re-arm: an arm writes (and locks) it
        consumer.execute(f"UPDATE kombu_queue SET wake_wanted_until = {flag} WHERE id = %s", [queue_id])
        with transaction.atomic():
            enqueue_in_transaction(task=record, args=("in-transaction",))
            [(still_armed,)] = consumer.execute(
                "SELECT wake_wanted_until IS NOT NULL FROM kombu_queue WHERE id = %s", [queue_id]
            ).fetchall()
            assert still_armed  # not disarmed by the publish
            [(_queue, ahead, _was_unset)] = consumer.execute(
                sql.ARM_WAKE, {"queues": [queue_id], "hold": 60}
            ).fetchall()  # does not wait for the caller's commit (lock_timeout would end it)
            assert ahead > 50
            assert notifications(listener, quiet=0.2) == []  # nothing to claim yet
        assert notifications(listener) == [str(queue_id)]  # the insert trigger, at commit
    assert message_rows() == 1
