"""Shared fixtures. Integration fixtures start real processes against pytest-django's test database."""

from __future__ import annotations

import gc
import itertools

import pytest
from django.db import connection
from kombu.transport.sqlalchemy import Channel as SqlaChannel

from boot.celery import app as celery_app
from common import embedded_postgres
from common.broker.transport import dispose_engines as dispose_broker_engines
from common.database_urls import broker_url_for, database_url_for
from common.embedded_postgres import EmbeddedPostgres
from tests.processes import ManagedProcess, celery_command, process_env

_names = itertools.count(1)


def pytest_sessionfinish(session, exitstatus):
    """Stop the embedded PostgreSQL this run started (not one `make dev` runs), so none outlives its checkout."""
    server = EmbeddedPostgres()
    if server.base_dir in embedded_postgres.STARTED_HERE:
        server.stop()


@pytest.fixture(scope="session")
def test_database_url(django_db_setup, django_db_blocker):
    """libpq URL of the test database; the in-process Celery app publishes to it too."""
    with django_db_blocker.unblock():
        url = database_url_for(connection.settings_dict)
    celery_app.conf.broker_url = broker_url_for(connection.settings_dict)
    # Drop pools opened on the old URL, if any; the next publish opens new ones.
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    yield url
    # Let pytest-django drop the test database: no broker connection may stay open.
    if celery_app._pool is not None:
        celery_app.pool.force_close_all()
    for engine, _session in SqlaChannel._engines.values():
        engine.dispose()
    # Our transport keeps its own engines (one per process); the stock cache above does not hold them.
    dispose_broker_engines()
    # Closed kombu connections and channels sit in reference cycles that can still hold a pooled session
    # (seen after app.control broadcasts): collect them now, before the database is dropped.
    gc.collect()


@pytest.fixture
def send_for_real(monkeypatch):
    """This test's in-process sends go to the broker: the Test configuration runs tasks eagerly otherwise."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)


@pytest.fixture
def clean_broker(transactional_db, test_database_url, send_for_real):
    """Empty kombu's tables, which pytest-django does not flush (they are not models); sends go to the broker."""
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE kombu_message")
        # No consumer of an earlier test is asleep any more: its wake-up flags must not outlive it.
        cursor.execute("UPDATE kombu_queue SET wake_wanted_until = NULL WHERE wake_wanted_until IS NOT NULL")
    yield
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE kombu_message")


@pytest.fixture
def start_process(test_database_url, tmp_path):
    """Factory: start a real process with the test-database environment; all are stopped at teardown."""
    started: list[ManagedProcess] = []

    def start(name: str, args: list[str], **env: str) -> ManagedProcess:
        proc = ManagedProcess(name, args, env=process_env(test_database_url, **env), log_dir=tmp_path, cwd=tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:  # all at once: each takes a moment to shut down
        proc.terminate()
    errors = []
    for proc in reversed(started):
        try:
            proc.stop()
        except Exception as exc:  # stop the others anyway, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def start_worker(start_process, clean_broker):
    """Factory: start `celery -A boot worker` (eager off) and wait until it is ready."""

    def start(*extra: str, queues: str = "high,default", concurrency: int = 2, **env: str) -> ManagedProcess:
        name = f"worker{next(_names)}"
        args = celery_command(
            "worker", "-Q", queues, "-n", f"{name}@%h", "-c", str(concurrency), "--loglevel", "INFO", *extra
        )
        proc = start_process(name, args, **env)
        proc.wait_for_output(r"ready\.", timeout=90)
        return proc

    return start


@pytest.fixture
def start_beat(start_process, clean_broker):
    """Factory: start `celery -A boot beat` with the DatabaseScheduler."""

    def start(*extra: str, quiet: bool = False, **env: str) -> ManagedProcess:
        name = f"beat{next(_names)}"
        args = celery_command(
            *(["--quiet"] if quiet else []),  # no start-up banner, which Celery prints outside logging
            "beat",
            "--scheduler",
            "django_celery_beat.schedulers:DatabaseScheduler",
            "--loglevel",
            "INFO",
            "--max-interval",
            "1",
            *extra,
        )
        proc = start_process(name, args, **env)
        proc.wait_for_output(r"beat: Starting", timeout=90)
        return proc

    return start
