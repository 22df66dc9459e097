"""Server-side storage failures during an upload: a clear 507/500, logged, and nothing the client must clean up."""

from __future__ import annotations

import logging
import subprocess
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from portal.models import UploadFile
from portal.services import lifecycle
from tests.portal.conftest import events, files_on_disk

pytestmark = pytest.mark.django_db


def post(client, token, data: bytes, name: str = "a.txt"):
    return client.post("/api/files", {"file": SimpleUploadedFile(name, data)}, HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 KiB tmpfs (needs root with CAP_SYS_ADMIN, as on the CI machine); unmounted afterwards."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_disk_full_while_staging_is_507_logged_and_nothing_kept(
    client, make_user, media_root, settings, small_disk, caplog
):
    settings.FILE_UPLOAD_STAGING_DIR = str(small_disk)
    settings.FILE_UPLOAD_CHUNK_SIZE = 16 * 1024
    _, token = make_user("alice")
    with caplog.at_level(logging.ERROR, logger="portal"):
        response = post(client, token, b"x" * (256 * 1024))
    assert response.status_code == 507, response.content
    assert response.json()["error"]["code"] == "storage_full"
    # The operator hears about the full disk, with the OS error; the client is not told it sent a bad request.
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "portal.upload_storage_failed"]
    assert record.exc_info and "No space left on device" in str(record.exc_info[1])
    assert UploadFile.objects.count() == 0 and events() == []
    assert list(small_disk.iterdir()) == [] and files_on_disk(media_root) == []


@pytest.mark.parametrize("broken", ["staging", "storage"])
def test_server_error_is_500_and_a_failing_removal_neither_hides_it_nor_blocks_cleanup(
    client, make_user, media_root, settings, caplog, broken
):
    """A plain file where a directory should be: the upload fails, and so does removing what it left."""
    _, token = make_user("alice")
    broken_dir = media_root / ("incoming" if broken == "staging" else "uploads")
    broken_dir.parent.mkdir(parents=True, exist_ok=True)
    broken_dir.write_bytes(b"not a directory")
    with caplog.at_level(logging.ERROR, logger="portal"):
        response = post(client, token, b"hello\n" * 100)
    assert response.status_code == 500, response.content
    assert response.json() == {"error": {"code": "storage_error", "message": "The server could not store this file."}}
    logged = {getattr(r, "event", None) for r in caplog.records}
    assert {"portal.upload_storage_failed", "portal.upload_abandon_failed"} <= logged
    # Never served, never announced; cleanup finishes it after the grace period once the disk is fixed.
    (row,) = UploadFile.objects.all()
    assert row.status == UploadFile.Status.FAILED and events() == []
    broken_dir.unlink()
    later = row.created_at + timedelta(hours=settings.FILE_UPLOAD_UPLOADING_GRACE_HOURS)
    assert lifecycle.cleanup_expired_uploads(now=later) == {"deleted": 1, "remaining": 0}
    assert UploadFile.objects.count() == 0 and events() == []
    assert files_on_disk(media_root) == []


def test_disk_full_when_moving_to_storage_is_507(client, make_user, media_root, settings, small_disk):
    """Staging fits, the storage does not (separate file systems): the move's ENOSPC is a 507 too."""
    settings.STORAGES = {
        **settings.STORAGES,
        "uploads": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(small_disk), "base_url": None},
        },
    }
    _, token = make_user("alice")
    response = post(client, token, b"y" * (256 * 1024))
    assert response.status_code == 507 and response.json()["error"]["code"] == "storage_full", response.content
    assert UploadFile.objects.count() == 0
    assert [p for p in small_disk.rglob("*") if p.is_file()] == [] and files_on_disk(media_root) == []
