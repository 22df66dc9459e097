"""Redis as an option (the Redis server on 127.0.0.1:6379): broker and results by URL, REDIS_URL, status depths."""

from __future__ import annotations

import subprocess
import sys

import pytest
from kombu import Connection

from common.monitoring.services.status import build_status_report
from tests.processes import PROJECT_DIR, process_env

REDIS = "redis://127.0.0.1:6379"
BROKER, RESULTS, DEPTHS = f"{REDIS}/15", f"{REDIS}/14", f"{REDIS}/13"


def flush(url: str) -> None:
    with Connection(url) as conn:
        conn.default_channel.client.flushdb()


def run_python(code: str, database_url: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        env=process_env(database_url, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


BROKER_URL = "from boot.celery import app; print(app.conf.broker_url)"


def test_redis_url_makes_redis_database_1_the_broker_and_unset_changes_nothing():
    probe = "postgresql://probe@127.0.0.1:5432/probe"
    assert run_python(BROKER_URL, probe, REDIS_URL=f"{REDIS}/0") == f"{REDIS}/1"
    assert run_python(BROKER_URL, probe, REDIS_URL=f"{REDIS}/0", CELERY_BROKER_URL=f"{REDIS}/7") == f"{REDIS}/7"
    assert run_python(BROKER_URL, probe).startswith("sqla+postgresql+psycopg://probe@127.0.0.1:5432/probe")


@pytest.mark.integration
def test_a_real_worker_runs_tasks_through_a_redis_broker_and_stores_results_in_redis(start_worker, test_database_url):
    for url in (BROKER, RESULTS):
        flush(url)
    redis_env = {"CELERY_BROKER_URL": BROKER, "CELERY_RESULT_BACKEND": RESULTS}
    worker = start_worker(**redis_env)
    assert "Connected to redis://:**@127.0.0.1:6379/15" in worker.output()
    sent = run_python(
        "from boot.celery import heartbeat; print(heartbeat.delay().get(timeout=60))", test_database_url, **redis_env
    )
    assert sent == "{'ok': True}"
    worker.wait_for_output(r"celery\.heartbeat")
    with Connection(RESULTS) as conn:
        assert any(key.startswith(b"celery-task-meta-") for key in conn.default_channel.client.scan_iter())


@pytest.mark.django_db
def test_the_status_screen_shows_queue_depths_of_a_redis_broker(settings, test_database_url):
    flush(DEPTHS)
    run_python(
        "from boot.celery import heartbeat\nfor _ in range(3): heartbeat.delay()",
        test_database_url,
        CELERY_BROKER_URL=DEPTHS,
    )
    settings.CELERY_BROKER_URL = DEPTHS
    queues = build_status_report()["queues"]
    assert queues["available"], queues
    assert {q["queue"]: q["ready"] for q in queues["queues"]} == {"high": 0, "default": 3}
    flush(DEPTHS)
