"""Test-only tasks, loaded into test workers with `celery -A boot worker -I tests.broker.tasks`.

Each run writes a row to broker_test_runs through the worker's Django connection,
so a test can count exactly how often every task ran.
"""

import os
import time

from celery import shared_task
from django.db import OperationalError, connection

RUNS_TABLE = (
    "CREATE TABLE IF NOT EXISTS broker_test_runs (token text NOT NULL, kind text NOT NULL, pid int NOT NULL); "
    "ALTER TABLE broker_test_runs ADD COLUMN IF NOT EXISTS at timestamptz NOT NULL DEFAULT clock_timestamp()"
)
# Set in a test worker's environment: hang_in_doomed_worker then hangs there (and only there).
DOOMED_WORKER = "BROKER_TEST_DOOMED_WORKER"


def _record(token: str, kind: str = "run") -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO broker_test_runs (token, kind, pid) VALUES (%s, %s, %s)", [token, kind, os.getpid()]
        )


@shared_task(name="tests.broker.tasks.record", ignore_result=True)
def record(token: str) -> None:
    """Record one run of `token`."""
    _record(token)


@shared_task(name="tests.broker.tasks.spawn", ignore_result=True)
def spawn(token: str, depth: int) -> None:
    """Record a run, then publish two children from inside the worker child (a tree of 2**(depth+1)-1 runs)."""
    _record(token)
    if depth > 0:
        for branch in ("a", "b"):
            spawn.delay(f"{token}.{branch}", depth - 1)


@shared_task(name="tests.broker.tasks.slow_once", ignore_result=True, acks_late=True)
def slow_once(token: str, seconds: float) -> None:
    """Record a start; the first run then sleeps `seconds` (long enough to be killed); every run records done."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM broker_test_runs WHERE token = %s AND kind = 'start'", [token])
        first = cursor.fetchone()[0] == 0
    _record(token, "start")
    if first:
        time.sleep(seconds)
    _record(token, "done")


@shared_task(name="tests.broker.tasks.slow", ignore_result=True, acks_late=True)
def slow(token: str, seconds: float) -> None:
    """Record a start, sleep `seconds`, record done; survives a database restart while it sleeps."""
    _record(token, "start")
    time.sleep(seconds)
    # The database may have been restarted meanwhile: use a fresh connection, and wait for the server if needed.
    deadline = time.monotonic() + 30
    while True:
        connection.close()
        try:
            _record(token, "done")
            return
        except OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@shared_task(name="tests.broker.tasks.hang_in_doomed_worker", ignore_result=True, acks_late=True)
def hang_in_doomed_worker(token: str, seconds: float) -> None:
    """Record a start; in the worker started with DOOMED_WORKER=1, sleep `seconds` first; record done."""
    _record(token, "start")
    if os.environ.get(DOOMED_WORKER) == "1":
        time.sleep(seconds)
    _record(token, "done")
