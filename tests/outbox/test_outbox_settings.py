"""Outbox settings that cannot work stop start-up, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.processes import PROJECT_DIR

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OUTBOX_DELIVERY_CONCURRENCY": "0"}, "OUTBOX_DELIVERY_CONCURRENCY"),
        ({"OUTBOX_BATCH_SIZE": "0"}, "OUTBOX_BATCH_SIZE"),
        ({"WEBHOOK_CONNECT_TIMEOUT": "0"}, "WEBHOOK_CONNECT_TIMEOUT"),
        ({"WEBHOOK_READ_TIMEOUT": "-1"}, "WEBHOOK_READ_TIMEOUT"),
        ({"WEBHOOK_READ_TIMEOUT": "nan"}, "WEBHOOK_READ_TIMEOUT"),
        ({"OUTBOX_DELIVER_SOFT_TIME_LIMIT": "20"}, "OUTBOX_DELIVER_SOFT_TIME_LIMIT"),
    ],
)
def test_outbox_settings_that_cannot_work_fail_at_start_naming_the_variable(env, variable):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT_DIR,
        env={**os.environ, "DJANGO_CONFIGURATION": "Dev", **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert variable in result.stderr and "Traceback" not in result.stderr
