"""A real gunicorn serving Doorito, and its memory use; no Django import, so benchmarks can use it too."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from tests.processes import ManagedProcess, free_port, gunicorn_command, process_env


def start_gunicorn(name: str, database_url: str, log_dir: Path, media: Path, **env: str) -> tuple[ManagedProcess, str]:
    """Start `gunicorn boot.wsgi` (one sync worker, Test configuration) and wait until it answers."""
    port = free_port()
    args = gunicorn_command("--bind", f"127.0.0.1:{port}", "--workers", "1", "--timeout", "600")
    proc = ManagedProcess(
        name,
        args,
        env=process_env(database_url, DJANGO_MEDIA_ROOT=str(media), **env),
        log_dir=log_dir,
        cwd=log_dir,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc, base
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still booting
            pass
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise AssertionError(f"gunicorn did not start:\n{proc.output()[-3000:]}")
        time.sleep(0.2)


def worker_pid(master_pid: int) -> int:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the process's peak resident memory so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")
