"""Recovery with real processes on a dedicated PostgreSQL the tests start, stop and restart themselves.

- database outage (30 s) while web, worker and beat run;
- worker SIGTERM: the running task finishes, queued messages stay for the next worker;
- worker kill -9: what docs/operations.md says happens to in-flight tasks in each ack mode.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
import requests

from common.embedded_postgres import EmbeddedPostgres
from tests.processes import (
    PROJECT_DIR,
    ManagedProcess,
    celery_command,
    free_port,
    gunicorn_command,
    process_env,
    wait_until,
)

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 30
# Short limits so a crashed worker's late-ack message comes back within seconds.
FAST = {
    "CELERY_TASK_TIME_LIMIT": "6",
    "CELERY_TASK_SOFT_TIME_LIMIT": "5",
    "BROKER_VISIBILITY_TIMEOUT": "8",
    "BROKER_POLLING_INTERVAL": "1",
    "MONITORING_HEARTBEAT_INTERVAL": "1",
    "BEAT_TAKEOVER_TIMEOUT": "5",
    "OUTBOX_RETRY_SCHEDULE": ",".join(["1"] * 40),
    "OUTBOX_RETRY_JITTER": "0",
    "OUTBOX_SWEEP_INTERVAL_SECONDS": "1",
    "WEBHOOK_CONNECT_TIMEOUT": "1",
    "WEBHOOK_READ_TIMEOUT": "2",
    "OUTBOX_LEASE_SECONDS": "5",
}


@pytest.fixture(scope="module")
def dedicated_pg(tmp_path_factory):
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("ops") / "pg", port=free_port())
    url = pg.start("doorito_ops_recovery")
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=PROJECT_DIR, env=process_env(url), check=True
        )
        yield pg, url
    finally:
        pg.stop("immediate")


@pytest.fixture
def cluster(dedicated_pg, tmp_path):
    """Start processes against the dedicated database; empty its queues and results first; stop all at the end."""
    pg, url = dedicated_pg
    if not pg.is_running():
        pg.start("doorito_ops_recovery")
    sql(url, "TRUNCATE kombu_message, django_celery_results_taskresult")
    started: list[ManagedProcess] = []

    def start(name: str, args: list[str], **env: str) -> ManagedProcess:
        proc = ManagedProcess(name, args, env=process_env(url, **{**FAST, **env}), log_dir=tmp_path, cwd=tmp_path)
        started.append(proc)
        return proc

    yield pg, url, start
    for proc in reversed(started):
        proc.stop()


def sql(url: str, query: str, params=()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def django(url: str, code: str) -> str:
    """Run Python in a Doorito shell against the dedicated database (sends tasks with the project's own config)."""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=PROJECT_DIR,
        env=process_env(url, **FAST),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def send_all(url: str, *tasks: tuple[str, list]) -> list[str]:
    """Send (name, args) tasks in this order from one Doorito shell: one process start, so they go out back to back."""
    sends = "".join(f"print(app.send_task({name!r}, args={args!r}, queue='default').id)\n" for name, args in tasks)
    return django(url, "from boot.celery import app\n" + sends).split()


def status_of(url: str, task_id: str) -> str | None:
    rows = sql(url, "SELECT status FROM django_celery_results_taskresult WHERE task_id = %s", [task_id])
    return rows[0][0] if rows else None


def in_broker(url: str, task_id: str) -> bool:
    return bool(sql(url, "SELECT 1 FROM kombu_message WHERE payload LIKE %s", [f"%{task_id}%"]))


def worker_args(*extra: str) -> list[str]:
    return celery_command("worker", "-Q", "high,default", "-I", "tests.monitoring.sample_tasks", "-l", "INFO", *extra)


def test_worker_sigterm_finishes_the_running_task_and_leaves_queued_ones(cluster):
    _pg, url, start = cluster
    # Concurrency 1 and prefetch 1: the worker holds only the message it runs, so the queued ones are
    # certainly not started before the SIGTERM (with a larger prefetch Celery may run what it prefetched).
    first = start("worker-a", worker_args("-c", "1", "--prefetch-multiplier", "1", "-n", "a@%h"))
    first.wait_for_output(r"ready\.", timeout=60)
    # Sent together (a shell takes seconds to start: sending the others after the first started could
    # outlast it). The first is claimed first; the queued ones wait in the broker behind it.
    running, *queued = send_all(url, ("ops_sample.sleep", [4.5]), *[("ops_sample.sleep", [0.1])] * 3)
    wait_until(lambda: status_of(url, running) == "STARTED", 30, "the first task to start")
    assert [status_of(url, task) for task in queued] == [None, None, None]  # the SIGTERM lands while it runs

    first.signal(15)
    first.popen.wait(timeout=30)
    assert status_of(url, running) == "SUCCESS"  # finished during warm shutdown
    # Queued messages stay queued: none ran, every one is still in the broker for the next worker.
    assert [status_of(url, task) for task in queued] == [None, None, None]
    assert all(in_broker(url, task) for task in queued)

    second = start("worker-b", worker_args("-c", "1", "-n", "b@%h"))
    second.wait_for_output(r"ready\.", timeout=60)
    wait_until(lambda: all(status_of(url, t) == "SUCCESS" for t in queued), 30, "the next worker to run them")


def test_worker_kill_9_loses_early_ack_task_and_redelivers_late_ack_task(cluster):
    _pg, url, start = cluster
    doomed = start("worker-doomed", worker_args("-c", "2", "-n", "doomed@%h"))
    doomed.wait_for_output(r"ready\.", timeout=60)
    early, late = send_all(url, ("ops_sample.sleep_early", [4]), ("ops_sample.sleep_late", [4]))
    wait_until(lambda: {status_of(url, early), status_of(url, late)} == {"STARTED"}, 30, "both tasks running")
    # Early ack: the message was deleted when the task started.
    assert not in_broker(url, early) and in_broker(url, late)
    doomed.kill_group()
    killed_at = time.monotonic()

    survivor = start("worker-survivor", worker_args("-c", "2", "-n", "survivor@%h"))
    survivor.wait_for_output(r"ready\.", timeout=60)
    # Late ack: the row stayed claimed; its lease runs out (BROKER_VISIBILITY_TIMEOUT) and it runs again.
    wait_until(lambda: status_of(url, late) == "SUCCESS", 40, "the late-ack task to be redelivered")
    assert time.monotonic() - killed_at >= 4  # not before the lease could have expired
    # Early ack is at-most-once: by now any lease has expired, and the task is gone for good.
    time.sleep(2)
    assert status_of(url, early) == "STARTED"
    assert not in_broker(url, early)


class Receiver(ThreadingHTTPServer):
    """A webhook receiver that answers 500 until told to accept, then records what it accepted."""

    def __init__(self):
        self.accepting = False
        self.accepted: list[dict] = []
        self.refused = 0
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.server.accepting:
            self.server.accepted.append({"webhook-id": self.headers["webhook-id"], "body": json.loads(body)})
            self.send_response(204)
        else:
            self.server.refused += 1
            self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_database_outage_web_worker_and_beat_recover_without_restart(cluster):
    pg, url, start = cluster
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        _run_outage(pg, url, start, receiver)
    finally:
        receiver.shutdown()


def _run_outage(pg, url, start, receiver):
    django(
        url,
        "from django_celery_beat.models import IntervalSchedule, PeriodicTask\n"
        "every, _ = IntervalSchedule.objects.get_or_create(every=1, period='seconds')\n"
        "PeriodicTask.objects.update_or_create(name='ops-tick', defaults={'task': 'common.tasks.heartbeat', "
        "'interval': every})\n"
        "from common.outbox.services.endpoints import create_endpoint\n"
        f"create_endpoint(url='http://127.0.0.1:{receiver.server_address[1]}/hook')",
    )
    port = free_port()
    web = start("web", gunicorn_command("--bind", f"127.0.0.1:{port}", "-w", "1"))
    worker = start("worker", worker_args("-c", "2", "-n", "outage@%h"))
    beat = start(
        "beat",
        celery_command("beat", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler", "-l", "INFO"),
    )
    worker.wait_for_output(r"ready\.", timeout=60)
    ready = f"http://127.0.0.1:{port}/readyz"
    wait_until(lambda: _status(ready) == 200, 60, "web ready")

    def ticks() -> int:
        return sql(url, "SELECT count(*) FROM django_celery_results_taskresult WHERE periodic_task_name = 'ops-tick'")[
            0
        ][0]

    wait_until(lambda: ticks() >= 2, 60, "periodic ticks before the outage")
    # Committed before the outage; the receiver refuses it until after, so it must survive the outage.
    event_id = django(
        url,
        "from django.db import transaction\nfrom common.outbox.services.emit import emit_event\n"
        "with transaction.atomic():\n"
        "    e = emit_event(event_type='ops.outage', aggregate_type='ops', aggregate_id='1', payload={'n': 1}, "
        "idempotency_key='ops-outage-1')\n"
        "print(e.pk)",
    )
    wait_until(lambda: receiver.refused >= 1, 30, "a refused delivery attempt")

    pg.stop("fast")
    outage_started = time.monotonic()
    during = []
    while time.monotonic() - outage_started < OUTAGE_SECONDS:
        during.append(_status(ready))
        time.sleep(1)
    assert set(during) == {503}, during
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200  # liveness holds
    receiver.accepting = True
    pg.start("doorito_ops_recovery")
    back = ticks()

    wait_until(lambda: _status(ready) == 200, 60, "/readyz back to 200")
    wait_until(lambda: ticks() >= back + 3, 90, "periodic tasks to resume")
    wait_until(lambda: receiver.accepted, 90, "the outbox event to be delivered")
    assert {hit["webhook-id"] for hit in receiver.accepted} == {f"msg_{uuid.UUID(event_id).hex}"}
    assert receiver.accepted[0]["body"]["type"] == "ops.outage"
    (fresh,) = send_all(url, ("common.tasks.heartbeat", []))
    wait_until(lambda: status_of(url, fresh) == "SUCCESS", 60, "a new task after the outage")
    for proc in (web, worker, beat):
        assert proc.popen.poll() is None, f"{proc.name} exited:\n{proc.output()[-3000:]}"


def _status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=5).status_code
    except requests.RequestException:
        return None
