"""PostgreSQL restarted under a running worker: it reconnects and goes on, nothing is lost or dumped to a file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psycopg
import pytest
from kombu import Connection

from common.broker.transport import dispose_engines
from common.embedded_postgres import EmbeddedPostgres
from tests.broker.tasks import RUNS_TABLE, record
from tests.processes import PROJECT_DIR, celery_command, free_port, process_env

pytestmark = pytest.mark.integration


def runs_of(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT token, count(*) FROM broker_test_runs GROUP BY token").fetchall())


def wait_for_runs(url: str, tokens: list[str], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = runs_of(url)
        if all(token in counts for token in tokens):
            return counts
        time.sleep(0.2)
    raise AssertionError(f"runs missing after {timeout}s: {sorted(set(tokens) - set(runs_of(url)))[:10]}")


@pytest.fixture
def server(tmp_path):
    pg = EmbeddedPostgres(tmp_path / "pg", port=free_port())
    url = pg.start("doorito")
    yield pg, url
    dispose_engines(url=url.replace("postgresql://", "postgresql+psycopg://"))
    pg.stop(mode="immediate")


def test_worker_survives_a_postgres_restart(server, start_process):
    pg, url = server
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=PROJECT_DIR, env=process_env(url), check=True
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RUNS_TABLE)
    worker = start_process(
        "restartworker",
        celery_command("worker", "-I", "tests.broker.tasks", "-Q", "default", "-c", "2", "--loglevel", "INFO"),
        DATABASE_URL=url,
    )
    worker.wait_for_output(r"ready\.", timeout=90)
    broker = Connection("sqla+" + url.replace("postgresql://", "postgresql+psycopg://"))

    before = [f"before{n}" for n in range(20)]
    for token in before:
        record.apply_async((token,), connection=broker)
    wait_for_runs(url, before, 60)

    pg.stop(mode="fast")  # every connection is cut
    time.sleep(2)
    pg.start("doorito")
    # Publish right away: the worker may still be reconnecting; the messages wait in the table.
    after = [f"after{n}" for n in range(20)]
    for token in after:
        record.apply_async((token,), connection=broker, retry_policy={"max_retries": 10, "interval_start": 0.5})
    counts = wait_for_runs(url, before + after, 90)
    broker.release()

    assert set(counts) == set(before + after) and set(counts.values()) == {1}
    assert worker.popen.poll() is None, worker.output()[-3000:]
    output = worker.output()
    assert "Trying to re-establish the connection" in output or "Connection to broker lost" in output
    assert "EMERGENCY DUMP" not in output.upper() and "unrestored" not in output.lower()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM kombu_message").fetchone()[0] == 0
    worker.signal(signal.SIGTERM)  # the main process only (see tests/broker/conftest.py)
    worker.popen.wait(timeout=15)
