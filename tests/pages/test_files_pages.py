"""My files in a real browser against gunicorn: sign-in, the no-JavaScript upload, list, countdown, download, delete."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from portal.models import UploadFile
from tests.pages.browser import PASSWORD, new_context, sign_in
from tests.pages.conftest import REFUSED_PNG_REASON

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def plain_upload(page, path, ttl_label: str | None = None) -> None:
    page.goto("/upload/")
    if ttl_label:
        page.get_by_label("Keep the files for").select_option(label=ttl_label)
    page.get_by_label("File", exact=True).set_input_files(str(path))
    page.get_by_role("button", name="Upload", exact=True).click()


def test_root_sends_people_to_sign_in_or_their_files(browser, web, signed_in):
    anonymous = new_context(browser, web[0]).new_page()
    anonymous.goto("/")
    assert re.search(r"/login/\?next=/files/$|/login/$", anonymous.url), anonymous.url
    anonymous.goto("/files/")
    assert "/login/?next=/files/" in anonymous.url
    anonymous.context.close()

    _, page, problems = signed_in("alice")
    response = page.goto("/")
    assert page.url.endswith("/files/")
    csp = dict(d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";"))
    assert (csp["script-src"], csp["style-src"], csp["frame-ancestors"]) == ("'self'", "'self'", "'none'")
    assert (csp["default-src"], csp["connect-src"], csp["object-src"]) == ("'self'", "'self'", "'none'")
    assert response.headers["x-frame-options"] == "DENY"
    session = next(c for c in page.context.cookies() if c["name"] == "sessionid")
    assert session["httpOnly"] is True
    assert page.get_by_role("heading", name="My files").is_visible()
    assert problems.errors == []


def test_without_javascript_upload_list_download_and_delete_work(signed_in, tmp_path):
    user, page, _ = signed_in("nojs", javascript=False)
    first, second = tmp_path / "first report.txt", tmp_path / "photo.bin"
    first.write_text("hello from the plain form\n" * 100)
    second.write_bytes(b"\x00\x01binary" * 5000)

    plain_upload(page, first, ttl_label="2 hours")
    assert page.url.endswith("/files/")
    assert page.get_by_role("status").filter(has_text="Uploaded first report.txt").is_visible()
    plain_upload(page, second)

    rows = page.locator("tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).locator("td.name").inner_text() == "photo.bin"  # newest first
    first_row = rows.nth(1)
    assert first_row.locator("td.name").inner_text() == "first report.txt"
    assert "text/plain" in first_row.inner_text()
    stored = UploadFile.objects.get(owner=user, original_filename="first report.txt")
    assert first_row.locator("code").inner_text() == stored.sha256[:12] + "…"
    assert first_row.locator("code").get_attribute("title") == stored.sha256
    countdown = first_row.locator("time.countdown")
    assert countdown.inner_text().startswith("in 1\xa0hour") or countdown.inner_text().startswith("in 2\xa0hours")
    assert countdown.get_attribute("title") == f"{stored.expires_at:%Y-%m-%d %H:%M:%S} UTC"
    assert stored.expires_at - stored.created_at == timedelta(hours=2)

    with page.expect_download() as download_info:
        first_row.get_by_role("link", name="Download first report.txt").click()
    downloaded = download_info.value.path().read_bytes()
    assert hashlib.sha256(downloaded).hexdigest() == hashlib.sha256(first.read_bytes()).hexdigest() == stored.sha256

    rows.nth(0).get_by_role("link", name="Delete photo.bin").click()
    assert page.get_by_role("heading", name="Delete this file?").is_visible()
    page.get_by_role("button", name="Delete photo.bin").click()
    assert page.url.endswith("/files/")
    assert page.locator("tbody tr").count() == 1
    assert not UploadFile.objects.filter(original_filename="photo.bin").exists()


def test_refused_plain_upload_shows_the_server_reason(signed_in, tmp_path):
    _, page, _ = signed_in("refused", javascript=False)
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 5000)
    plain_upload(page, picture)
    assert page.get_by_role("alert").inner_text() == f"Refused: {REFUSED_PNG_REASON}"
    assert not UploadFile.objects.exists()


def test_expired_file_shows_expired_without_download_before_cleanup(signed_in, tmp_path):
    user, page, _ = signed_in("late", javascript=False)
    path = tmp_path / "old.txt"
    path.write_text("soon gone")
    plain_upload(page, path)
    upload = UploadFile.objects.get(owner=user)
    UploadFile.objects.filter(pk=upload.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    page.goto("/files/")
    row = page.locator("tbody tr").first
    assert row.locator("td.status").inner_text() == "expired"
    assert row.locator(".expired").inner_text() == "expired"
    assert row.get_by_role("link", name=re.compile("Download")).count() == 0
    response = page.request.get(f"/files/{upload.id}/download")
    assert response.status == 410
    assert UploadFile.objects.get(pk=upload.pk).status == "stored"  # cleanup has not run


def post_plain_upload(page, name: str, data: bytes):
    """The plain form's POST from a signed-in page (the form itself is hidden while JavaScript runs)."""
    page.goto("/upload/")
    token = page.locator("input[name=csrfmiddlewaretoken]").first.get_attribute("value")
    file = {"name": name, "mimeType": "application/octet-stream", "buffer": data}
    return page.request.post("/upload/plain", multipart={"csrfmiddlewaretoken": token, "file": file})


def test_countdown_runs_live_with_javascript(signed_in):
    _, page, problems = signed_in("live")
    assert post_plain_upload(page, "live.txt", b"tick").ok

    page.goto("/files/")
    countdown = page.locator("time.countdown").first
    first = countdown.inner_text()
    assert re.fullmatch(r"in \d+ h \d+ min \d+ s", first), first
    time.sleep(1.5)
    assert countdown.inner_text() != first
    assert page.get_by_role("button", name="Copy the SHA-256 of live.txt").is_visible()
    assert problems.csp_violations() == []
    assert problems.errors == []


def test_files_are_paginated_newest_first(signed_in):
    user, page, _ = signed_in("many", javascript=False)
    now = timezone.now()
    for n in range(11):
        UploadFile.objects.create(
            owner=user,
            original_filename=f"file{n:02}.txt",
            storage_name=f"zz/many{n}",
            status="stored",
            size_bytes=1,
            sha256="0" * 64,
            created_at=now - timedelta(minutes=20 - n),
            expires_at=now + timedelta(hours=1),
        )
    page.goto("/files/")  # FILE_UPLOAD_PAGE_SIZE=5
    assert page.locator("td.name").all_inner_texts() == [f"file{n:02}.txt" for n in range(10, 5, -1)]
    assert page.get_by_text("Page 1 of 3").is_visible()
    page.get_by_role("link", name="Older →").click()
    assert page.locator("td.name").all_inner_texts() == [f"file{n:02}.txt" for n in range(5, 0, -1)]
    page.goto("/files/?page=3")
    assert page.locator("td.name").all_inner_texts() == ["file00.txt"]


def test_password_change_then_sign_out_and_in_with_the_new_one(signed_in):
    _, page, _ = signed_in("changer")
    page.get_by_role("link", name="Password").click()
    page.get_by_label("Old password").fill(PASSWORD)
    page.get_by_label("New password:", exact=True).fill("a much newer passphrase 42")
    page.get_by_label("New password confirmation").fill("a much newer passphrase 42")
    page.get_by_role("button", name="Change password").click()
    assert page.get_by_role("heading", name="Password changed").is_visible()
    page.get_by_role("button", name="Sign out").click()
    assert "/login/" in page.url
    sign_in(page, "changer", "a much newer passphrase 42")
    assert page.url.endswith("/files/")
