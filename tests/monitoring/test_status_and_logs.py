"""Heartbeats, the status screen/endpoint/admin page, degraded /readyz and JSON task logs, with real processes."""

from __future__ import annotations

import io
import json
import re

import pytest
import requests
import structlog
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django_celery_results.models import TaskResult

from boot.celery import app as celery_app
from common.monitoring.models import WorkerHeartbeat
from tests.processes import celery_command, free_port, procfile_command, wait_until

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
    # As a web request would: django-structlog hands the sender's request id on to the task's logs.
    with structlog.contextvars.bound_contextvars(request_id="req-sent-from-web"):
        heartbeat_id = celery_app.send_task("common.tasks.heartbeat", queue="default").id
    sent = {
        "succeeded": heartbeat_id,
        "failed": celery_app.send_task("ops_sample.fail", queue="default").id,
        "retried": celery_app.send_task("ops_sample.retry_once", queue="default").id,
    }
    # Killed by the hard time limit: reported from the worker's main process, not the child that ran it. (In
    # Celery's event loop a hard limit is armed when the soft one expires, so a soft limit below it is set too.)
    timed_out = celery_app.send_task(
        "ops_sample.sleep_past_soft_limit", args=[30], queue="default", soft_time_limit=0.5, time_limit=1
    ).id
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

    # The task's context is bound: what the task itself logs, and what is logged after its outcome, carry it.
    (own_line,) = [r for r in records if r["event"] == "celery.heartbeat"]
    assert own_line["task_name"] == "common.tasks.heartbeat" and own_line["queue"] == "default"
    assert own_line["task_id"] == heartbeat_id and own_line["request_id"] == "req-sent-from-web"
    (after,) = [r for r in records if r["event"] == "task_succeeded" and r.get("task_id") == heartbeat_id]
    assert after["outcome"] == "succeeded" and isinstance(after["runtime"], float)
    assert after["task_name"] == "common.tasks.heartbeat" and after["request_id"] == "req-sent-from-web"
    # The next task run by the same child starts with nothing of the previous one bound.
    assert all(r.get("request_id") is None for r in records if r.get("task_id") in set(sent.values()) - {heartbeat_id})


def test_json_log_format_makes_every_line_of_the_procfile_web_process_json(start_process, transactional_db):
    port = free_port()
    web = start_process("jsonweb", procfile_command("web"), PORT=str(port), WEB_CONCURRENCY="1", LOG_FORMAT="json")
    web.wait_for_output("Booting worker", timeout=60)

    def answers():
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still booting
            return None

    assert wait_until(answers, 30, "gunicorn to answer").status_code == 200
    assert requests.get(f"http://127.0.0.1:{port}/no-such-page", timeout=5).status_code == 404
    # A signed-in user's request, with the id the proxy gave it.
    user = User.objects.create_user("logged", password="pw")
    browser = Client()
    browser.force_login(user)
    signed_in = requests.get(
        f"http://127.0.0.1:{port}/healthz",
        cookies={settings.SESSION_COOKIE_NAME: browser.cookies[settings.SESSION_COOKIE_NAME].value},
        headers={"X-Request-ID": "req-from-proxy"},
        timeout=5,
    )
    assert signed_in.headers["X-Request-ID"] == "req-from-proxy"
    web.wait_for_output("/no-such-page", timeout=10)
    web.wait_for_output('"request_id": "req-from-proxy"', timeout=10, count=3)
    web.stop()

    records = [json.loads(line) for line in web.output().splitlines() if line.strip()]  # each line is JSON
    loggers = {r["logger"] for r in records}
    assert {"gunicorn.error", "gunicorn.access", "django.request"} <= loggers, loggers
    requests_seen = {(r["path"], r["status"]) for r in records if r.get("event") == "http.request"}
    assert {("/healthz", 200), ("/no-such-page", 404)} <= requests_seen

    # Every line web logs about a request carries its request id; Django's carry the user too.
    in_request = [r for r in records if r["logger"].startswith(("django", "gunicorn.access"))]
    assert in_request and all(r["request_id"] for r in in_request), in_request
    assert all("user_id" in r for r in in_request if r["logger"].startswith("django_structlog"))
    traced = {(r["logger"], r["event"]): r for r in records if r.get("request_id") == "req-from-proxy"}
    assert {"request_started", "request_finished", "http.request"} == {event for _, event in traced}
    assert traced[("django_structlog.middlewares.request", "request_finished")]["user_id"] == user.pk


def test_text_log_format_is_the_default_and_human_readable(start_worker):
    worker = start_worker(queues="default", concurrency=1)
    result = celery_app.send_task("common.tasks.heartbeat", queue="default")
    worker.wait_for_output(rf"task succeeded: common\.tasks\.heartbeat\[{result.id}\] queue=default runtime=")
    assert not [line for line in worker.output().splitlines() if line.startswith("{")]  # no JSON line
    # The task's own line: its message, then the bound context as key=value.
    own_line = worker.wait_for_output(r"celery\.heartbeat .*task_name=common\.tasks\.heartbeat")
    assert re.search(rf"\] celery\.heartbeat +\[common\.monitoring\.tasks\] .*task_id={result.id}", own_line)


def test_json_log_format_makes_every_line_of_the_procfile_beat_json(start_process, clean_broker):
    beat = start_process("jsonbeat", procfile_command("beat", "--max-interval", "1"), LOG_FORMAT="json", **FAST)
    beat.wait_for_output(r"beat\.leadership_acquired", timeout=30)
    beat.stop()
    records = [json.loads(line) for line in beat.output().splitlines() if line.strip()]  # each line is JSON
    assert {"celery.beat", "common.monitoring.services.beat_leadership"} <= {r["logger"] for r in records}
    assert all(r["timestamp"] and r["level"] and r["event"] for r in records)


def test_structlog_celery_switch_off_leaves_task_logs_without_the_senders_context(start_worker):
    worker = start_worker(queues="default", concurrency=1, LOG_FORMAT="json", DJANGO_STRUCTLOG_CELERY_ENABLED="false")
    with structlog.contextvars.bound_contextvars(request_id="req-sent-from-web"):
        result = celery_app.send_task("common.tasks.heartbeat", queue="default")
    worker.wait_for_output(r'"event": "task\.succeeded"', timeout=30)
    worker.stop()
    records = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    task_lines = [r for r in records if r.get("task_id") == result.id]
    # Doorito's own task context is still bound; django-structlog's events and handed-on context are not there.
    assert {r["event"] for r in task_lines} >= {"task.started", "celery.heartbeat", "task.succeeded"}
    assert all(r["task_name"] == "common.tasks.heartbeat" and r["queue"] == "default" for r in task_lines)
    assert not [r for r in records if r["logger"].startswith("django_structlog")]
    assert not [r for r in task_lines if "request_id" in r]
