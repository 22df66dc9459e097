"""Producers wake consumers only while one may be asleep: real workers arm kombu_queue.wake_wanted_until."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from django.db import connection

from common.broker import sql
from tests.broker.tasks import record
from tests.processes import celery_command, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Far longer than any test below waits for a task: only a NOTIFY can start one in time.
LONG_POLL = {"BROKER_POLLING_INTERVAL": "30"}


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


def test_a_sleeping_worker_is_woken_by_each_publish_while_its_flag_is_kept_armed(start_test_worker, runs):
    # Polling every 5 s, a worker arms its flag for 11 s (2 x 5 + 1) and re-arms once less than 5 s are left:
    # pauses of 12 s outlast one arm, so each later publish relies on a re-arm made while the worker slept.
    start_test_worker(BROKER_POLLING_INTERVAL="5")
    wait_until(wake_wanted_until, 30, "the idle worker to arm its queue's flag")
    published: dict[str, float] = {}
    flags = []
    for n in range(4):
        if n:
            time.sleep(12)
        flags.append(wake_wanted_until())
        token = f"wake{n}"
        published[token] = time.time()
        record.delay(token)
        wait_until(lambda token=token: runs.counts().get(token), 10, f"{token} to run")
    delays = start_delays(published)
    print(f"publish -> start (s): {[round(d, 3) for d in delays.values()]}")
    # A 5 s poll would start most of them later than this (and all four within 1 s by chance once in 600).
    assert all(delay < 1 for delay in delays.values()), delays
    assert len(set(flags)) >= 3, flags  # re-armed while idle: the flag moved on between the pauses


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
            [(asleep,)] = producer.execute(sql.INSERT_MESSAGE, (payload, queue_id)).fetchall()
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
