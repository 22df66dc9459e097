"""No gunicorn of ours opens the control socket that every gunicorn on a host shares (~/.gunicorn/gunicorn.ctl)."""

from __future__ import annotations

import pytest
import requests

from tests.processes import free_port, gunicorn_command, procfile_command, wait_until

pytestmark = pytest.mark.integration


def _answers(port: int):
    def check():
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still booting
            return False

    return check


def test_procfile_web_and_the_tests_gunicorn_leave_no_control_socket(start_process, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    procfile_port, helper_port = free_port(), free_port()
    start_process(
        "procfile-web",
        procfile_command("web"),
        PORT=str(procfile_port),
        WEB_CONCURRENCY="1",
        HOME=str(home),
    )
    start_process("helper-web", gunicorn_command("--bind", f"127.0.0.1:{helper_port}", "-w", "1"), HOME=str(home))
    wait_until(_answers(procfile_port), 60, "the Procfile's gunicorn to answer")
    wait_until(_answers(helper_port), 60, "the tests' gunicorn to answer")
    assert not (home / ".gunicorn").exists() or list((home / ".gunicorn").iterdir()) == []
