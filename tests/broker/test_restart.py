"""PostgreSQL restarted under a running worker: it reconnects and goes on, nothing is lost or dumped to a file."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from kombu import Connection

from common.broker.transport import dispose_engines
from common.embedded_postgres import EmbeddedPostgres
from tests.broker.tasks import RUNS_TABLE, record, slow
from tests.processes import PROJECT_DIR, celery_command, free_port, process_env, wait_until

pytestmark = pytest.mark.integration


def runs_of(url: str, kind: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT token, count(*) FROM broker_test_runs WHERE kind = %s GROUP BY token", [kind])
        return dict(rows.fetchall())


def scalar(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchone()[0]


def wait_for_runs(url: str, tokens: list[str], timeout: float, kind: str) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = runs_of(url, kind)
        if all(token in counts for token in tokens):
            return counts
        time.sleep(0.2)
    raise AssertionError(f"{kind} runs missing after {timeout}s: {sorted(set(tokens) - set(runs_of(url, kind)))[:10]}")


@pytest.fixture
def server():
    # Not under tmp_path: another pytest session starting meanwhile resets /tmp/pytest-of-<user> to 0700,
    # and (as root) the server's own user could then no longer reach its directory to stop or start.
    base = Path(tempfile.mkdtemp(prefix="doorito-restart-"))
    pg = EmbeddedPostgres(base / "pg", port=free_port())
    try:
        url = pg.start("doorito")
        yield pg, url
        dispose_engines(url=url.replace("postgresql://", "postgresql+psycopg://"))
    finally:
        pg.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


def test_worker_survives_a_postgres_restart_with_tasks_running_and_prefetched(
    server, start_process, tmp_path, send_for_real
):
    pg, url = server
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=PROJECT_DIR, env=process_env(url), check=True
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RUNS_TABLE)
    # kombu's emergency dump goes to a tempfile.mktemp() name: give the worker its own TMPDIR to watch.
    dump_dir = tmp_path / "worker-tmp"
    dump_dir.mkdir()
    short = {"BROKER_VISIBILITY_TIMEOUT": "12", "CELERY_TASK_TIME_LIMIT": "10", "CELERY_TASK_SOFT_TIME_LIMIT": "9"}
    worker = start_process(
        "restartworker",
        celery_command("worker", "-I", "tests.broker.tasks", "-Q", "default", "-c", "2", "--loglevel", "INFO"),
        DATABASE_URL=url,
        TMPDIR=str(dump_dir),
        **short,
    )
    worker.wait_for_output(r"ready\.", timeout=90)
    broker = Connection("sqla+" + url.replace("postgresql://", "postgresql+psycopg://"))

    # acks_late tasks that outlast the outage: 2 run (concurrency 2), more are claimed (prefetched), the rest wait.
    before = [f"before{n}" for n in range(8)]
    for token in before:
        slow.apply_async((token, 4), connection=broker)
    wait_for_runs(url, before[:2], 30, "start")
    claimed = "SELECT count(*) FROM kombu_message WHERE NOT visible AND version = -1"
    time.sleep(0.5)
    in_flight_at_stop = scalar(url, claimed)
    assert in_flight_at_stop > 2, "some tasks must be prefetched (claimed, not running) when PostgreSQL stops"
    assert scalar(url, "SELECT count(*) FROM broker_test_runs WHERE kind = 'done'") == 0

    pg.stop(mode="fast")  # every connection is cut while tasks run and others sit claimed in the worker
    time.sleep(2)
    pg.start("doorito")
    # Publish right away: the worker may still be reconnecting; the messages wait in the table.
    after = [f"after{n}" for n in range(20)]
    for token in after:
        record.apply_async((token,), connection=broker, retry_policy={"max_retries": 10, "interval_start": 0.5})
    # Rows whose restore failed during the outage come back after the visibility timeout at the latest.
    done = wait_for_runs(url, before, 90, "done")
    ran = wait_for_runs(url, after, 60, "run")
    broker.release()

    assert done == dict.fromkeys(before, 1) and ran == dict.fromkeys(after, 1)
    assert runs_of(url, "start") == dict.fromkeys(before, 1)  # no task started twice: nothing was redelivered early
    assert worker.popen.poll() is None, worker.output()[-3000:]
    output = worker.output()
    # The outage was seen (by the rescue thread, or by Celery's consumer if it was waiting on the broker then).
    assert "broker.rescue_failed" in output or "Connection to broker lost" in output
    assert "EMERGENCY DUMP" not in output.upper() and "unrestored" not in output.lower()
    # (billiard's empty pymp-* directories are expected there; a dump would be a file.)
    assert [p for p in dump_dir.rglob("*") if p.is_file()] == [] and not list(tmp_path.glob("tmp*"))
    wait_until(lambda: scalar(url, "SELECT count(*) FROM kombu_message") == 0, 20, "an empty kombu_message")
    worker.signal(signal.SIGTERM)  # the main process only (see tests/broker/conftest.py)
    worker.popen.wait(timeout=15)
