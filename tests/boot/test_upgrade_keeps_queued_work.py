"""A database migrated and filled by the code before the outbox became its own app upgrades in place:
its migrations move forward, and the messages it queued and the periodic tasks it stored still run."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import psycopg
import pytest
from django.db import connection
from django_celery_results.models import TaskResult

from tests.databases import sibling_database_url
from tests.outbox.receiver import Receiver
from tests.processes import PROJECT_DIR, celery_command, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The last commit with the old layout (common/tasks.py, common/services/...): its task names are the ones
# that messages in kombu_message and rows in django_celery_beat_periodictask carry.
OLD_LAYOUT_COMMIT = "9c6daa4"

FILL_WITH_OLD_CODE = """
import sys
import boot  # configures Django and Celery
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from common.services.endpoints import create_endpoint
from common.services.outbox import emit_event
from common.tasks import heartbeat

create_endpoint(url=sys.argv[1])
with transaction.atomic():
    emit_event(event_type="file.stored", aggregate_type="upload", aggregate_id="1",
               payload={"queued": "before the upgrade"}, idempotency_key="before-upgrade")
queued = heartbeat.apply_async()
every = IntervalSchedule.objects.create(every=1, period="seconds")
PeriodicTask.objects.create(name="stored-before-upgrade", task="common.tasks.heartbeat", interval=every)
print(queued.id)
"""


@pytest.fixture
def old_tree(tmp_path):
    tree = tmp_path / "old"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", OLD_LAYOUT_COMMIT], cwd=PROJECT_DIR, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


@pytest.fixture
def upgrade_database(test_database_url):
    """A fresh database on the test server, dropped afterwards."""
    name = f"upgrade_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(test_database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield sibling_database_url(name)
    with psycopg.connect(test_database_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(tree, args, database_url):
    env = {
        "DJANGO_CONFIGURATION": "Test",
        "DATABASE_URL": database_url,
        "PYTHONPATH": str(tree),
        "PATH": "/usr/bin:/bin",
        "CELERY_TASK_ALWAYS_EAGER": "false",
    }
    result = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_messages_and_periodic_tasks_from_the_old_layout_run_after_the_upgrade(
    old_tree, upgrade_database, start_process
):
    receiver = Receiver()
    try:
        run(old_tree, ["manage.py", "migrate", "--noinput"], upgrade_database)
        queued_id = run(old_tree, ["-c", FILL_WITH_OLD_CODE, receiver.plan("/hook", [200])], upgrade_database)
        queued_id = queued_id.strip().splitlines()[-1]
        with psycopg.connect(upgrade_database) as db:
            assert db.execute("SELECT count(*) FROM kombu_message").fetchone()[0] == 2  # nudge + heartbeat

        run(PROJECT_DIR, ["manage.py", "migrate", "--noinput"], upgrade_database)
        start_process(
            "worker", celery_command("worker", "-Q", "high,default", "-c", "1"), DATABASE_URL=upgrade_database
        )
        beat_args = celery_command("beat", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler")
        start_process("beat", [*beat_args, "--max-interval", "1"], DATABASE_URL=upgrade_database)

        wait_until(lambda: receiver.received("/hook"), 90, "the webhook queued before the upgrade")
        assert json.loads(receiver.received("/hook")[0]["body"])["data"] == {"queued": "before the upgrade"}
        with psycopg.connect(upgrade_database) as db:
            wait_until(
                lambda: (
                    db.execute(
                        "SELECT status FROM django_celery_results_taskresult WHERE task_id = %s", [queued_id]
                    ).fetchone()
                    == ("SUCCESS",)
                ),
                60,
                "the heartbeat queued before the upgrade",
            )
            wait_until(
                lambda: db.execute(
                    "SELECT count(*) FROM django_celery_results_taskresult "
                    "WHERE periodic_task_name = 'stored-before-upgrade' AND status = 'SUCCESS'"
                ).fetchone()[0],
                60,
                "the periodic task stored before the upgrade",
            )
    finally:
        receiver.close()
    # The test database itself was not touched.
    assert not TaskResult.objects.exists()
    assert connection.settings_dict["NAME"] not in upgrade_database
