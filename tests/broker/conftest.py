"""Fixtures for the broker tests: a runs table the test tasks write to, and workers that load them."""

from __future__ import annotations

import contextlib
import itertools
import signal
import subprocess

import pytest
from django.db import connection

from tests.broker.tasks import RUNS_TABLE
from tests.processes import celery_command

_names = itertools.count(1)


@pytest.fixture
def runs(clean_broker):
    """Access to broker_test_runs: counts per token and kind."""
    with connection.cursor() as cursor:
        cursor.execute(RUNS_TABLE)
        cursor.execute("TRUNCATE broker_test_runs")

    class Runs:
        @staticmethod
        def counts(kind: str = "run") -> dict[str, int]:
            with connection.cursor() as cursor:
                cursor.execute("SELECT token, count(*) FROM broker_test_runs WHERE kind = %s GROUP BY token", [kind])
                return dict(cursor.fetchall())

        @staticmethod
        def total(kind: str = "run") -> int:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM broker_test_runs WHERE kind = %s", [kind])
                return cursor.fetchone()[0]

    yield Runs
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE broker_test_runs")


@pytest.fixture
def start_test_worker(start_process, runs):
    """Factory: a real worker that also imports tests.broker.tasks; waits until it is ready."""

    started = []

    def start(*extra: str, concurrency: int = 2, **env: str):
        name = f"brokerworker{next(_names)}"
        args = celery_command(
            "worker", "-I", "tests.broker.tasks", "-Q", "high,default", "-n", f"{name}@%h",
            "-c", str(concurrency), "--loglevel", "INFO", *extra,
        )  # fmt: skip
        proc = start_process(name, args, **env)
        started.append(proc)
        proc.wait_for_output(r"ready\.", timeout=90)
        return proc

    yield start
    # SIGTERM to the main process only: a SIGTERM to the whole group can kill a pool child while it holds
    # billiard's queue lock, and the main process then hangs in _terminate_pool until start_process's
    # teardown SIGKILLs it 20 s later. start_process still kills whatever is left.
    for proc in started:
        proc.signal(signal.SIGTERM)
    for proc in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=15)


def message_rows() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM kombu_message")
        return cursor.fetchone()[0]
