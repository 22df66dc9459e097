"""tus uploads in process: expiry from the last PATCH and cleanup of unfinished uploads; the browser session
with CSRF as the other way to authenticate."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from portal.models import ResumableUpload, UploadFile
from portal.services import lifecycle
from portal.services.removal import staging_path
from tests.portal.conftest import events, files_on_disk
from tests.portal.tus_http import metadata

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)
TUS = {"HTTP_TUS_RESUMABLE": "1.0.0"}
DATA = b"some text that takes a while to arrive\n" * 100


def create(client: Client, length: int, **extra: str):
    return client.generic(
        "POST",
        "/api/uploads/",
        b"",
        content_type="",
        HTTP_UPLOAD_LENGTH=str(length),
        HTTP_UPLOAD_METADATA=metadata(filename="slow.txt"),
        **TUS,
        **extra,
    )


def patch(client: Client, url: str, offset: int, data: bytes, **extra: str):
    return client.generic(
        "PATCH",
        url,
        data,
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_OFFSET=str(offset),
        **TUS,
        **extra,
    )


def test_unfinished_upload_expires_after_its_last_patch_and_cleanup_removes_it(client, make_user, media_root, settings):
    _, token = make_user("alice")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    url = create(client, len(DATA), **bearer)["Location"]
    assert patch(client, url, 0, DATA[:1000], **bearer).status_code == 204
    resumable = ResumableUpload.objects.get()
    last_patch = timezone.now()
    hours = settings.FILE_UPLOAD_RESUMABLE_EXPIRY_HOURS
    assert abs(resumable.expires_at - (last_patch + hours * HOUR)) < timedelta(minutes=1)

    # Long past the single-request grace period, but not past its own expiry: a slow upload is not stuck.
    assert hours > settings.FILE_UPLOAD_UPLOADING_GRACE_HOURS
    assert lifecycle.cleanup_expired_uploads(now=last_patch + (hours - 1) * HOUR) == {"deleted": 0, "remaining": 0}
    assert patch(client, url, 1000, DATA[1000:2000], **bearer).status_code == 204

    # Expired (cleanup not run yet): refused as gone, never resumed.
    ResumableUpload.objects.update(expires_at=timezone.now() - HOUR)
    assert client.head(url, **TUS, **bearer).status_code == 410
    response = patch(client, url, 2000, DATA[2000:], **bearer)
    assert response.status_code == 410 and response.json()["error"]["code"] == "upload_expired"
    assert staging_path(upload_id=resumable.file_id).stat().st_size == 2000

    assert lifecycle.cleanup_expired_uploads(now=timezone.now()) == {"deleted": 1, "remaining": 0}
    assert UploadFile.objects.count() == 0 and ResumableUpload.objects.count() == 0
    assert files_on_disk(media_root) == [] and events() == []


def test_browser_session_needs_the_csrf_token_for_writes(make_user, media_root):
    user, _ = make_user("alice")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    secret = "a" * 32
    client.cookies["csrftoken"] = secret
    refused = create(client, len(DATA))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    created = create(client, len(DATA), HTTP_X_CSRFTOKEN=secret)
    assert created.status_code == 201, created.content
    url = created["Location"]
    assert client.head(url, **TUS).status_code == 200  # a safe method needs no token
    assert patch(client, url, 0, DATA).status_code == 403
    assert patch(client, url, 0, DATA, HTTP_X_CSRFTOKEN=secret).status_code == 204
    assert UploadFile.objects.get().status == UploadFile.Status.STORED and UploadFile.objects.get().owner == user
    assert Client().head(url, **TUS).status_code == 401  # signed out


def test_admin_shows_the_tus_state_of_an_upload(client, admin_client, make_user, media_root):
    _, token = make_user("alice")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    url = create(client, len(DATA), **bearer)["Location"]
    assert patch(client, url, 0, DATA[:1234], **bearer).status_code == 204
    page = admin_client.get(f"/admin/portal/uploadfile/{url.rsplit('/', 1)[-1]}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Resumable upload" in text and "1234" in text and str(len(DATA)) in text
