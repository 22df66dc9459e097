"""Real processes for integration tests: started in their own session, always cleaned up."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent


class ManagedProcess:
    """A child process whose combined output goes to a log file we can wait on."""

    def __init__(self, name: str, args: list[str], *, env: dict, log_dir: Path, cwd: Path = PROJECT_DIR) -> None:
        self.name = name
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._terminating = False
        self.popen = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, pattern: str, timeout: float = 60, *, count: int = 1) -> str:
        """Block until `pattern` (a regex) appears `count` times in the output; fail with the log if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            if len(re.findall(pattern, text)) >= count:
                return text
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.popen.returncode}) before {pattern!r}:\n{text[-4000:]}"
                )
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: no {pattern!r} within {timeout}s:\n{self.output()[-4000:]}")

    def signal(self, signum: int) -> None:
        """Send `signum` to the process only (not its children)."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signum)

    def kill_group(self) -> None:
        """SIGKILL the process and everything it started, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self) -> None:
        """Ask for a graceful stop: SIGTERM to the main process only, once.

        Not to the whole group: a SIGTERM that kills a Celery pool child while it holds billiard's
        queue lock leaves the main process hanging in its pool shutdown.
        """
        if not self._terminating:
            self._terminating = True
            self.signal(signal.SIGTERM)

    def stop(self, timeout: float = 20) -> int | None:
        """Stop gracefully, then SIGKILL whatever is left of the group; return the exit code."""
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)
        # Whatever the main process left behind (pool children) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        self._log.close()
        return self.popen.returncode


def process_env(database_url: str, **overrides: str) -> dict:
    """Environment for a Doorito process using the test database, with eager mode off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "BROKER_", "PYTEST_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="boot.settings",
        DJANGO_CONFIGURATION="Test",
        DATABASE_URL=database_url,
        CELERY_TASK_ALWAYS_EAGER="false",
        PATH=f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(PROJECT_DIR),
    )
    env.update(overrides)
    return env


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    """Return the first truthy value of predicate(), or fail after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn_command(*args: str, app: str = "boot.wsgi") -> list[str]:
    """`gunicorn <app>` without the control socket, which every gunicorn on a host would share by default."""
    return [str(BIN_DIR / "gunicorn"), app, "--no-control-socket", *args]


def procfile_command(process: str, *extra: str) -> list[str]:
    """The Procfile's command for `process` as deployed, minus its leading VAR=value (tests keep theirs)."""
    line = next(line for line in (PROJECT_DIR / "Procfile").read_text().splitlines() if line.startswith(f"{process}:"))
    command = re.sub(r"^(\w+=\S+\s+)*", "", line.removeprefix(f"{process}:").strip())
    return ["bash", "-c", " ".join(["exec", command, *extra])]


def celery_command(*args: str) -> list[str]:
    return [str(BIN_DIR / "celery"), "-A", "boot", *args]
