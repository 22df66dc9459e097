"""Heartbeats, the status screen/endpoint/admin page, degraded /readyz and JSON task logs, with real processes."""

from __future__ import annotations

import io
import json
import re

import pytest
import requests
from django.contrib.auth.models import User
from django.core.management import call_command
from django_celery_results.models import TaskResult

from boot.celery import app as celery_app
from common.monitoring.models import WorkerHeartbeat
from tests.processes import PROJECT_DIR, celery_command, free_port, wait_until

pytestmark = pytest.mark.integration

FAST = {"MONITORING_HEARTBEAT_INTERVAL": "1", "BEAT_TAKEOVER_TIMEOUT": "5"}


def status_screen() -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("doorito_status", stdout=out)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue()


def test_status_shows_workers_beat_queues_and_task_outcomes(client, start_worker, start_beat, settings):
    settings.WORKER_STALE_AFTER = 5
    # Nothing runs yet: web is ready but the background is degraded (200, not 503).
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["background"]["workers"]["ok"] is False

    worker = start_worker("-I", "tests.monitoring.sample_tasks", **FAST)
    beat = start_beat(**FAST)
    ok = celery_app.send_task("common.tasks.heartbeat", queue="default")
    failed = celery_app.send_task("ops_sample.fail", queue="default")
    wait_until(lambda: TaskResult.objects.filter(task_id__in=[ok.id, failed.id]).count() == 2, 60, "both results")
    wait_until(lambda: WorkerHeartbeat.objects.filter(tasks_done__gte=2).exists(), 30, "tasks_done in the heartbeat")
    wait_until(lambda: client.get("/readyz").json()["status"] == "ok", 30, "readyz ok with worker and beat up")

    code, screen = status_screen()
    assert code == 1  # the failed task raises TASK_FAILURES
    assert "TASK_FAILURES" in screen and "NO_LIVE_WORKER" not in screen and "BEAT_STALE" not in screen
    assert re.search(r"alive\s+worker\d+@\S+ pid=\d+ queues=default,high", screen)
    assert "leader   " in screen and f"pid={beat.pid}" in screen
    assert "succeeded=1 failed=1" in screen
    assert re.search(r"default\s+ready=\d+ claimed=\d+", screen)

    # The same data as JSON: staff only.
    assert client.get("/ops/status").status_code == 401
    User.objects.create_user("viewer", password="pw")
    client.login(username="viewer", password="pw")
    assert client.get("/ops/status").status_code == 403
    assert client.get("/admin/status/").status_code == 302  # to the admin login
    User.objects.create_user("ops", password="pw", is_staff=True)
    client.login(username="ops", password="pw")
    report = client.get("/ops/status").json()
    assert [w["state"] for w in report["workers"]] == ["alive"]
    assert report["beat"]["leader"]["pid"] == beat.pid
    assert report["tasks_last_hour"]["succeeded"] == 1 and report["tasks_last_hour"]["failed"] == 1
    assert {q["queue"] for q in report["queues"]["queues"]} >= {"default", "high"}
    page = client.get("/admin/status/")
    assert page.status_code == 200
    assert report["workers"][0]["hostname"] in page.content.decode()

    # A clean stop shows as stopped; a kill -9 as stale once WORKER_STALE_AFTER has passed.
    worker.stop()
    assert wait_until(lambda: WorkerHeartbeat.objects.filter(stopped_at__isnull=False).exists(), 10, "stopped")
    crashed = start_worker(**FAST)
    wait_until(lambda: WorkerHeartbeat.objects.filter(pid__gt=0, stopped_at__isnull=True).exists(), 30, "heartbeat")
    crashed.kill_group()
    wait_until(lambda: "WORKER_STALE" in status_screen()[1], 20, "the killed worker to go stale")
    assert client.get("/readyz").json()["status"] == "degraded"
    assert client.get("/readyz").status_code == 200


def test_json_log_format_logs_every_task_event_as_one_object_per_line(start_process, clean_broker):
    args = celery_command(
        "--quiet", "worker", "-Q", "default", "-c", "1", "-I", "tests.monitoring.sample_tasks", "-l", "INFO"
    )
    worker = start_process("jsonworker", args, LOG_FORMAT="json")
    worker.wait_for_output(r"ready\.", timeout=60)
    sent = {
        "succeeded": celery_app.send_task("common.tasks.heartbeat", queue="default").id,
        "failed": celery_app.send_task("ops_sample.fail", queue="default").id,
        "retried": celery_app.send_task("ops_sample.retry_once", queue="default").id,
    }
    # Killed by the hard time limit: reported from the worker's main process, not the child that ran it.
    timed_out = celery_app.send_task("ops_sample.sleep", args=[30], queue="default", time_limit=1).id
    worker.wait_for_output(r'"event": "task\.succeeded"', timeout=60, count=2)  # heartbeat + retry_once's rerun
    worker.wait_for_output(r'"event": "task\.failed"', timeout=30, count=2)
    worker.stop()

    records = []
    for line in worker.output().splitlines():
        if not line.strip() or re.fullmatch(r"worker: (Warm|Cold) shutdown \(MainProcess\)", line):
            continue  # Celery print()s this one straight to stderr, outside logging
        records.append(json.loads(line))  # every other line is one JSON object
    events = {(r["event"], r["task_id"]): r for r in records if r.get("logger") == "doorito.tasks"}
    for outcome, task_id in sent.items():
        assert ("task.started", task_id) in events
        record = events[(f"task.{outcome}", task_id)]
        assert record["queue"] == "default" and record["outcome"] == outcome
        assert record["task_name"] and isinstance(record["runtime"], float)
    assert "ValueError" in events[("task.failed", sent["failed"])]["error"]
    killed = events[("task.failed", timed_out)]
    assert "TimeLimitExceeded" in killed["error"]
    assert killed["queue"] == "default" and killed["runtime"] == 1.0


def test_json_log_format_makes_every_line_of_the_procfile_web_process_json(start_process):
    web_line = next(line for line in (PROJECT_DIR / "Procfile").read_text().splitlines() if line.startswith("web:"))
    # The Procfile's command as deployed, minus its leading VAR=value (the test keeps the Test configuration).
    web_command = re.sub(r"^(\w+=\S+\s+)*", "", web_line.removeprefix("web:").strip())
    port = free_port()
    web = start_process(
        "jsonweb", ["bash", "-c", f"exec {web_command}"], PORT=str(port), WEB_CONCURRENCY="1", LOG_FORMAT="json"
    )
    web.wait_for_output("Booting worker", timeout=60)

    def answers():
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still booting
            return None

    assert wait_until(answers, 30, "gunicorn to answer").status_code == 200
    assert requests.get(f"http://127.0.0.1:{port}/no-such-page", timeout=5).status_code == 404
    web.wait_for_output("/no-such-page", timeout=10)
    web.stop()

    records = [json.loads(line) for line in web.output().splitlines() if line.strip()]  # each line is JSON
    loggers = {r["logger"] for r in records}
    assert {"gunicorn.error", "gunicorn.access", "django.request"} <= loggers, loggers
    requests_seen = {(r["path"], r["status"]) for r in records if r.get("event") == "http.request"}
    assert {("/healthz", 200), ("/no-such-page", 404)} <= requests_seen


def test_text_log_format_is_the_default_and_human_readable(start_worker):
    worker = start_worker(queues="default", concurrency=1)
    result = celery_app.send_task("common.tasks.heartbeat", queue="default")
    worker.wait_for_output(rf"task succeeded: common\.tasks\.heartbeat\[{result.id}\] queue=default runtime=")
    assert '{"ts"' not in worker.output()
