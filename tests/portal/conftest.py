"""Portal fixtures: a private media root, users with API tokens, and a real gunicorn server."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model

from common.models import OutboxEvent
from portal.services.tokens import create_api_token
from tests.processes import ManagedProcess, process_env


@pytest.fixture
def media_root(tmp_path, settings):
    """Uploads of this test go to a fresh directory (storage and staging)."""
    root = tmp_path / "media"
    settings.MEDIA_ROOT = str(root)
    settings.FILE_UPLOAD_STAGING_DIR = str(root / "incoming")
    settings.STORAGES = {
        **settings.STORAGES,
        "uploads": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(root / "uploads"), "base_url": None},
        },
    }
    return root


def files_on_disk(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def events(event_type: str | None = None) -> list[OutboxEvent]:
    qs = OutboxEvent.objects.filter(aggregate_type="portal.upload_file").order_by("created_at")
    return list(qs.filter(event_type=event_type) if event_type else qs)


@pytest.fixture
def make_user(db):
    def make(username: str):
        user = get_user_model().objects.create_user(username=username, password="x")
        return user, create_api_token(user=user, name="test").plaintext

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(name: str, database_url: str, log_dir: Path, media: Path, **env: str) -> tuple[ManagedProcess, str]:
    """Start `gunicorn boot.wsgi` (one sync worker, Test configuration) and wait until it answers."""
    port = free_port()
    args = [
        str(Path(sys.executable).parent / "gunicorn"),
        "boot.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--timeout",
        "600",
    ]
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
        except requests.ConnectionError:
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
