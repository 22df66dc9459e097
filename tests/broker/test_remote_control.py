"""Celery's remote control, revoke, events and Flower against a real worker on the PostgreSQL broker."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import requests

from boot.celery import app as celery_app
from tests.broker.conftest import message_rows, scheduled_rows
from tests.broker.tasks import record, slow
from tests.processes import celery_command, free_port, process_env, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_inspect_control_revoke_events_and_flower_reach_a_real_worker(
    start_test_worker, start_process, runs, test_database_url
):
    worker = start_test_worker("-E", concurrency=1)
    node = re.search(r"(\S+@\S+) ready\.", worker.output()).group(1)
    port = free_port()
    flower = start_process(
        "flower",
        celery_command("flower", f"--port={port}", "--address=127.0.0.1"),
        FLOWER_UNAUTHENTICATED_API="true",
    )
    env = process_env(test_database_url)
    flower.wait_for_output(r"Connected to", timeout=60)  # its event receiver is bound: it sees every task below

    def celery_cli(*args: str) -> str:
        done = subprocess.run(celery_command(*args), env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def inspect(method: str, *args: str) -> dict:
        return json.loads(celery_cli("inspect", method, *args, "-d", node, "--json", "--timeout", "5"))

    assert inspect("ping") == {node: {"ok": "pong"}}
    assert inspect("stats")[node]["pid"] == worker.pid

    busy = slow.delay("busy", 4)  # holds the only pool process while the rest happens
    wait_until(lambda: runs.counts("start").get("busy"), 30, "the slow task to start")
    assert [task["id"] for task in inspect("active")[node]] == [busy.id]

    # A queued task, still a ready row in a queue the worker does not consume yet, and an ETA task waiting as a
    # scheduled row: both revoked by broadcast (one from this process, one from the CLI), neither runs.
    queued = record.apply_async(("revoked-queued",), queue="later")
    kept = record.apply_async(("kept-queued",), queue="later")
    eta = record.apply_async(("revoked-eta",), countdown=4)
    record.apply_async(("kept-eta",), countdown=4)
    assert scheduled_rows() == 2
    celery_app.control.revoke(queued.id)
    assert "revoked" in celery_cli("control", "revoke", eta.id, "-d", node, "--timeout", "5")
    assert "ok" in celery_cli("control", "add_consumer", "later", "-d", node, "--timeout", "5").lower()

    assert "new rate limit set successfully" in celery_cli(
        "control", "rate_limit", "tests.broker.tasks.spawn", "7/m", "-d", node, "--timeout", "5"
    )
    assert "tests.broker.tasks.spawn [rate_limit=7/m]" in inspect("registered", "rate_limit")[node]

    wait_until(lambda: {"kept-queued", "kept-eta"} <= set(runs.counts()), 40, "the kept tasks to run")
    wait_until(lambda: message_rows() == 0, 30, "every task message to be acked")
    assert runs.counts() == {"kept-queued": 1, "kept-eta": 1}
    assert f"Discarding revoked task: tests.broker.tasks.record[{queued.id}]" in worker.output()
    assert f"Discarding revoked task: tests.broker.tasks.record[{eta.id}]" in worker.output()

    # Flower learns the worker by remote control and the tasks from the worker's events (-E).
    api = f"http://127.0.0.1:{port}/api"
    workers = wait_until(
        lambda: requests.get(f"{api}/workers", params={"refresh": 1}, timeout=10).json(), 30, "workers"
    )
    assert workers[node]["stats"]["pid"] == worker.pid
    kept_id = kept.id
    tasks = wait_until(
        lambda: (t := requests.get(f"{api}/tasks", timeout=10).json()).get(kept_id, {}).get("state") == "SUCCESS" and t,
        30,
        "Flower to see the kept task succeed",
    )
    assert tasks[kept_id]["worker"] == node and tasks[kept_id]["name"] == "tests.broker.tasks.record"
    assert tasks[queued.id]["state"] == tasks[eta.id]["state"] == "REVOKED"
