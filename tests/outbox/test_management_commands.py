"""outbox_replay and outbox_deliver refuse impossible input without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from common.outbox.services.endpoints import (
    create_endpoint,
)
from tests.processes import PROJECT_DIR

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hours", "nan"], "--hours must be positive"),
        (["--hours", "inf"], "--hours must be positive"),
        (["--hours", "1e20"], "--hours must be at most"),
        (["--hours=-inf"], "--hours must be positive"),
        (["--since", "2026-13-01T00:00:00"], "--since: not a valid date-time"),
        (["--since", "2026-01-01T00:00:00Z", "--until", "2026-02-30T00:00:00Z"], "--until: not a valid date-time"),
        (["--hours", "1", "--until", "2020-01-01T00:00:00Z"], "--until needs --since"),
    ],
)
def test_replay_command_refuses_unbounded_or_impossible_windows(args, message):
    endpoint = create_endpoint(url="https://hooks.example.com/h")
    with pytest.raises(CommandError, match=message):
        call_command("outbox_replay", str(endpoint.id), *args)


def test_replay_command_rejections_print_no_traceback():
    # Arguments are checked before the database is read, so this needs no endpoint.
    env = {**os.environ, "DJANGO_CONFIGURATION": "Test"}
    result = subprocess.run(
        [sys.executable, "manage.py", "outbox_replay", "1", "--hours", "nan"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--hours must be positive and finite, got nan" in result.stderr


def test_deliver_command_refuses_a_non_positive_batch():
    with pytest.raises(CommandError, match="--batch must be at least 1"):
        call_command("outbox_deliver", "--batch", "0")
