"""CELERY_DEFAULT_QUEUE or CELERY_TASK_DEFAULT_QUEUE renames the default queue; a worker says what it skips."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.processes import PROJECT_DIR, process_env

ROUTES = (
    "import json; from boot.celery import app; "
    "route = lambda name: app.amqp.router.route({}, name)['queue'].name; "
    "print(json.dumps({'default': app.conf.task_default_queue, 'queues': [q.name for q in app.conf.task_queues], "
    "'heartbeat': route('common.tasks.heartbeat'), 'cleanup': route('portal.tasks.cleanup_expired_upload_files_task'), "
    "'sweep': route('common.tasks.deliver_outbox_events_task'), 'unrouted': route('some.unrouted.task')}))"
)


def routes(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", ROUTES],
        cwd=PROJECT_DIR,
        env=process_env("postgresql://probe@127.0.0.1:1/probe", **env),
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("variable", ["CELERY_DEFAULT_QUEUE", "CELERY_TASK_DEFAULT_QUEUE"])
def test_either_name_renames_the_default_queue_for_every_task_routed_there(variable):
    result = routes(**{variable: "jobs"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "default": "jobs",
        "queues": ["high", "jobs"],
        "heartbeat": "jobs",
        "cleanup": "jobs",
        "sweep": "high",
        "unrouted": "jobs",
    }


def test_the_two_names_naming_different_queues_is_refused_at_start():
    result = routes(CELERY_DEFAULT_QUEUE="jobs", CELERY_TASK_DEFAULT_QUEUE="work")
    assert result.returncode == 3
    assert "CELERY_DEFAULT_QUEUE ('jobs') and CELERY_TASK_DEFAULT_QUEUE ('work') name different queues" in result.stderr


@pytest.mark.integration
def test_a_worker_with_the_readme_queues_says_at_start_what_it_does_not_consume(start_worker):
    worker = start_worker(queues="high,default", CELERY_DEFAULT_QUEUE="jobs")
    text = worker.wait_for_output(r"does not consume queue 'jobs'", timeout=30)
    line = next(line for line in text.splitlines() if "does not consume queue 'jobs'" in line)
    assert "common.tasks.heartbeat" in line and "portal.tasks.cleanup_expired_upload_files_task" in line
    assert "-Q jobs" in line
    # A worker that consumes the renamed queue has nothing to say.
    quiet = start_worker(queues="high,jobs", CELERY_DEFAULT_QUEUE="jobs")
    assert "does not consume" not in quiet.output()
