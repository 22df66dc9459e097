"""Portal fixtures: a private media root, a module server's emptied media, and users with API tokens."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from common.outbox.models import OutboxEvent
from portal.services.tokens import create_api_token


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


@pytest.fixture
def empty_media(server):
    """After each test, the module's shared server media (`server` is `(base, media)`) is emptied, as rows are."""
    yield
    for path in server[1].iterdir():
        shutil.rmtree(path)


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


TUS_CLIENT_DIR = Path(__file__).parent / "tus_client"


@pytest.fixture(scope="session")
def tus_js_client() -> Path:
    """The tus-js-client runner script, its pinned packages installed by `npm ci` on first use."""
    installed = TUS_CLIENT_DIR / "node_modules" / ".package-lock.json"
    lock = TUS_CLIENT_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        # The Makefile installs node and npm on a fresh machine; the lock file pins every package exactly.
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=TUS_CLIENT_DIR, check=True, timeout=300)
    return TUS_CLIENT_DIR / "upload.mjs"
