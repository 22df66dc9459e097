"""/healthz and /readyz, in-process and against a real server whose database is unreachable."""

import time

import pytest
import requests
from django.db import connection

from tests.processes import ManagedProcess, free_port, gunicorn_command, process_env


def test_healthz_is_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_ok_when_database_and_broker_tables_exist(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": {"ok": True}, "broker": {"ok": True}}


@pytest.mark.django_db
def test_readyz_names_the_broker_when_its_tables_are_missing(client):
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE kombu_message RENAME TO kombu_message_away")
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"]["ok"] is False
    # The check is named, with the kind of error; the database's own message (which can name hosts,
    # tables and users) stays in the log, since /readyz is public.
    assert body["checks"]["broker"]["error"].startswith("ProgrammingError")
    assert "kombu_message" not in response.text


@pytest.mark.integration
def test_readyz_is_503_without_traceback_when_database_is_down(tmp_path):
    port = free_port()
    closed = "postgresql://postgres@127.0.0.1:1/doorito"
    server = ManagedProcess(
        "web",
        gunicorn_command("--bind", f"127.0.0.1:{port}"),
        env=process_env(closed),
        log_dir=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                live = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still booting
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.2)
        ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
    finally:
        server.stop()
    assert live.status_code == 200
    assert ready.status_code == 503
    body = ready.json()
    assert body["checks"]["database"]["ok"] is False
    assert "Traceback" not in ready.text
    assert "127.0.0.1" not in ready.text  # the connection error names the host and port: logged, not served
    assert "127.0.0.1" in server.output()
