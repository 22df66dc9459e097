"""GET /metrics: a real scrape of a running gunicorn while real workers and beat do work, parsed and checked."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import requests
import yaml
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_results.models import TaskResult
from prometheus_client.parser import text_string_to_metric_families

from boot.celery import app as celery_app
from common.monitoring.models import BeatInstance
from common.monitoring.services.metrics import SOURCES, DatabaseCollector
from common.outbox.models import DeliveryAttempt, WebhookDelivery
from common.outbox.services.endpoints import create_endpoint, disable_endpoint
from portal.models import UploadFile
from portal.services.tokens import create_api_token
from portal.services.uploads import begin_upload
from tests.outbox.receiver import Receiver
from tests.portal.server import start_gunicorn
from tests.processes import PROJECT_DIR, wait_until

TOKEN = "metrics-test-token"
FAST = {"MONITORING_HEARTBEAT_INTERVAL": "1", "BEAT_TAKEOVER_TIMEOUT": "5"}


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one authenticated scrape, through prometheus_client's parser."""
    response = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_endpoint_is_a_404_until_a_token_is_set_then_needs_it(client, settings, db):
    settings.METRICS_TOKEN = None
    response = client.get("/metrics")
    assert response.status_code == 404 and "METRICS_TOKEN" in response.json()["error"]

    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and b"doorito_metrics_source_up" in ok.content
    assert client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405


def test_one_scrape_runs_one_query_per_source_nine_in_all(db):
    with CaptureQueriesContext(connection) as queries:
        families = list(DatabaseCollector().collect())
    assert len(SOURCES) == 9  # docs/operations.md states this count
    assert len(queries.captured_queries) == len(SOURCES)
    up = next(f for f in families if f.name == "doorito_metrics_source_up")
    assert {s.labels["source"]: s.value for s in up.samples} == dict.fromkeys(SOURCES, 1)


def test_a_failing_source_is_reported_down_and_the_others_still_answer(db, monkeypatch):
    def broken(*, now):
        raise RuntimeError("boom")

    monkeypatch.setitem(SOURCES, "workers", broken)
    families = {f.name: f for f in DatabaseCollector().collect()}
    up = {s.labels["source"]: s.value for s in families["doorito_metrics_source_up"].samples}
    assert up["workers"] == 0 and up["queues"] == 1
    assert "doorito_workers" not in families and "doorito_uploads" in families


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_scrape_of_gunicorn_matches_the_work_done_by_real_workers_and_beat(
    test_database_url, tmp_path, start_worker, start_beat
):
    receiver = Receiver()
    (tmp_path / "media").mkdir()
    proc, base = start_gunicorn(
        "gunicorn-metrics", test_database_url, tmp_path, tmp_path / "media", METRICS_TOKEN=TOKEN
    )
    try:
        _scrape_before_and_after_work(base, receiver, start_worker, start_beat)
    finally:
        proc.stop()
        receiver.close()


def _scrape_before_and_after_work(base, receiver, start_worker, start_beat):
    create_endpoint(url=receiver.plan("/ok", [200]))
    create_endpoint(url=receiver.plan("/bad", [500]))
    disabled = create_endpoint(url=receiver.plan("/off", [200]))
    disable_endpoint(endpoint_id=disabled.id, reason="test")
    user = get_user_model().objects.create_user(username="metrics", password="x")
    token = create_api_token(user=user, name="metrics").plaintext
    sizes = [1000, 3000, 7000]
    ids = []
    for size in sizes:
        response = requests.post(
            f"{base}/api/files",
            files={"file": ("a.bin", b"\x00\x01" * (size // 2))},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    # The third is past its TTL (cleanup has not run yet); a fourth is still streaming in.
    UploadFile.objects.filter(pk=ids[2]).update(expires_at=timezone.now() - timedelta(minutes=1))
    begin_upload(owner=user, original_filename="partial.bin")
    for _ in range(3):
        celery_app.send_task("common.tasks.heartbeat", queue="default")
    for _ in range(2):
        celery_app.send_task("ops_sample.fail", queue="default")

    # Before any worker runs: everything waits.
    before = scrape(base)
    assert value(before, "doorito_queue_ready_messages", queue="default") == 5
    assert value(before, "doorito_queue_in_flight_messages", queue="default") == 0
    assert value(before, "doorito_queue_oldest_ready_age_seconds", queue="default") >= 0
    assert value(before, "doorito_workers", state="alive") == 0
    assert value(before, "doorito_beat_leader_alive") == 0
    # 3 file.stored events x 2 active endpoints; the disabled endpoint gets none.
    assert value(before, "doorito_outbox_deliveries", status="pending") == 6
    assert value(before, "doorito_outbox_due_deliveries") == 6
    assert value(before, "doorito_outbox_oldest_due_age_seconds") > 0
    assert value(before, "doorito_webhook_endpoints", state="disabled") == 1
    assert value(before, "doorito_webhook_endpoints", state="active") == 2
    assert value(before, "doorito_uploads", state="stored") == 2
    assert value(before, "doorito_upload_bytes", state="stored") == sizes[0] + sizes[1]
    assert value(before, "doorito_uploads", state="expired_awaiting_cleanup") == 1
    assert value(before, "doorito_upload_bytes", state="expired_awaiting_cleanup") == sizes[2]
    assert value(before, "doorito_uploads", state="unfinished") == 1

    # An hour between retries: each delivery is attempted exactly once during the test.
    start_worker("-I", "tests.monitoring.sample_tasks", OUTBOX_RETRY_SCHEDULE="3600", **FAST)
    start_beat(**FAST)
    wait_until(
        lambda: TaskResult.objects.filter(task_name__in=["common.tasks.heartbeat", "ops_sample.fail"]).count() == 5,
        60,
        "the tasks",
    )
    wait_until(lambda: DeliveryAttempt.objects.count() == 6, 60, "one attempt per delivery")
    sleeping = celery_app.send_task("ops_sample.sleep", args=[30], queue="default")
    wait_until(lambda: TaskResult.objects.filter(task_id=sleeping.id, status="STARTED").exists(), 60, "the sleep")

    after = wait_until(lambda: _beat_led(scrape(base)), 30, "a scrape with a beat leader")
    assert value(after, "doorito_queue_ready_messages", queue="default") == 0
    assert value(after, "doorito_queue_in_flight_messages", queue="default") == 1  # the sleeping task
    assert value(after, "doorito_workers", state="alive") == 1
    assert value(after, "doorito_beat_instances_alive") == 1
    assert 0 <= value(after, "doorito_beat_last_tick_age_seconds") < 30
    for window in ("5m", "1h"):
        assert (
            value(after, "doorito_task_results", task="common.tasks.heartbeat", state="succeeded", window=window) == 3
        )
        assert value(after, "doorito_task_results", task="ops_sample.fail", state="failed", window=window) == 2
    assert (
        "doorito_task_results",
        (("state", "failed"), ("task", "common.tasks.heartbeat"), ("window", "5m")),
    ) not in after
    assert value(after, "doorito_outbox_deliveries", status="delivered") == 3
    assert value(after, "doorito_outbox_deliveries", status="pending") == 3  # the 500s, retried in an hour
    assert value(after, "doorito_outbox_due_deliveries") == 0
    assert value(after, "doorito_outbox_oldest_due_age_seconds") == 0
    assert value(after, "doorito_webhook_endpoints", state="failing") == 1
    assert value(after, "doorito_webhook_attempts_5m", outcome="succeeded") == 3
    assert value(after, "doorito_webhook_attempts_5m", outcome="http_error") == 3
    assert value(after, "doorito_webhook_attempts_5m", outcome="network_error") == 0
    for outcome in ("succeeded", "http_error"):
        assert value(after, "doorito_webhook_attempt_duration_seconds_bucket", outcome=outcome, le="+Inf") == 3
        assert value(after, "doorito_webhook_attempt_duration_seconds_bucket", outcome=outcome, le="20") == 3
        recorded = sum(a.duration_ms for a in DeliveryAttempt.objects.filter(succeeded=outcome == "succeeded")) / 1000
        assert value(after, "doorito_webhook_attempt_duration_seconds_gsum", outcome=outcome) == pytest.approx(recorded)
    assert len(receiver.received("/ok")) == 3 and len(receiver.received("/bad")) == 3
    assert WebhookDelivery.objects.filter(endpoint_id=disabled.id).count() == 0
    assert all(value(after, "doorito_metrics_source_up", source=source) == 1 for source in SOURCES)


def _beat_led(samples: dict) -> dict | None:
    return samples if value(samples, "doorito_beat_leader_alive") == 1 else None


def test_alert_rules_and_dashboard_name_only_metrics_a_scrape_serves(db):
    """The documented rules and the Grafana dashboard cannot drift from the collector's metric names."""
    docs = PROJECT_DIR / "docs"
    rules_block = re.search(r"### Alert rules.*?```yaml\n(.*?)```", (docs / "operations.md").read_text(), re.S)
    rules = yaml.safe_load(rules_block.group(1))["groups"][0]["rules"]
    dashboard = json.loads((docs / "grafana-dashboard.json").read_text())
    expressions = [rule["expr"] for rule in rules] + [
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    ]
    now = timezone.now()  # a beat that once led, so its tick age is served too
    BeatInstance.objects.create(hostname="h", pid=1, started_at=now, last_tick=now, is_leader=True)
    served = set()
    for family in DatabaseCollector().collect():
        served |= {sample.name for sample in family.samples} | {family.name}
    named = {name for expr in expressions for name in re.findall(r"\bdoorito_\w+", expr)}
    assert len(rules) == 9 and len(named) >= 15
    assert named - served == set()
