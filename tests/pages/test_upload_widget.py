"""The upload page in a real browser: Uppy's Dashboard over tus against gunicorn, through a byte-counting proxy.

Three files at once (one of 200 MB), the browser taken offline mid-upload and back, pause and resume, a reload
mid-upload, the list with countdowns, a download compared by SHA-256, a delete, and a refused file with the
server's reason.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from portal.models import UploadFile
from tests.pages.browser import CountingProxy, PageProblems, new_context, sign_in
from tests.pages.conftest import MB, REFUSED_PNG_REASON

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ALL_DONE = """() => {
    const files = window.doorito.uppy.getFiles();
    return files.length > 0 && files.every((f) => f.progress.uploadComplete);
}"""


def progress_of(page, name: str) -> dict:
    return page.evaluate("(name) => window.doorito.uppy.getFiles().find(f => f.name === name)?.progress ?? null", name)


def wait_for_progress(page, name: str, fraction: float, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = progress_of(page, name)
        if progress and progress.get("bytesTotal") and progress["bytesUploaded"] >= fraction * progress["bytesTotal"]:
            assert not progress.get("uploadComplete"), f"{name} finished before it could be interrupted"
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} never reached {fraction:.0%}: {progress_of(page, name)}")


def add_files(page, paths) -> None:
    page.locator("input.uppy-Dashboard-input").first.set_input_files([str(p) for p in paths])


def start_upload(page) -> None:
    page.locator("button.uppy-StatusBar-actionBtn--upload").click()


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture
def proxied(browser, web, person, clean_media):
    """A signed-in page whose every byte to the server passes through a CountingProxy."""
    proxy = CountingProxy(urlsplit(web[0]).port)
    user = person("uploader")
    context = new_context(browser, proxy.base)
    page = context.new_page()
    problems = PageProblems(page)
    sign_in(page, "uploader")
    yield user, page, problems, proxy
    context.close()
    proxy.close()


def test_three_files_resume_after_offline_and_reload_then_list_download_delete(proxied, tmp_path):
    user, page, problems, proxy = proxied
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:
        for _ in range(200):
            handle.write(os.urandom(MB))
    notes, data = tmp_path / "notes.txt", tmp_path / "data.bin"
    notes.write_text("meeting notes\n" * 1000)
    data.write_bytes(os.urandom(3 * MB))
    sizes = {p.name: p.stat().st_size for p in (big, notes, data)}

    page.goto("/upload/")
    assert page.locator("#plain-upload").is_hidden()
    page.get_by_label("Keep the files for").select_option(label="2 hours")
    add_files(page, [big, notes, data])
    before = proxy.upstream_bytes
    start_upload(page)

    # Offline mid-upload, then online: it continues from the server's offset.
    wait_for_progress(page, "big.bin", 0.3)
    page.context.set_offline(True)
    time.sleep(0.5)
    stalled = progress_of(page, "big.bin")
    time.sleep(1.5)
    assert progress_of(page, "big.bin") == stalled and not stalled["uploadComplete"]  # nothing moves offline
    page.context.set_offline(False)
    page.wait_for_function(ALL_DONE, timeout=180_000)
    sent = proxy.upstream_bytes - before
    total = sum(sizes.values())
    print(f"offline/online: the server received {sent / total:.3f}x the files' size")
    assert sent < 1.3 * total, f"sent {sent} bytes for {total}"
    assert page.locator("#file-progress li.done").count() == 3
    assert page.locator("#batch-text").inner_text() == "3 uploaded, 0 failed."
    for path in (big, notes, data):
        stored = UploadFile.objects.get(owner=user, original_filename=path.name)
        assert (stored.status, stored.size_bytes, stored.sha256) == ("stored", sizes[path.name], sha256_of(path))
        # The TTL chosen on the page, counted from when the upload finished (tus), not when it began.
        assert timedelta(hours=2) <= stored.expires_at - stored.created_at < timedelta(hours=2, minutes=5)

    # Pause and resume, then reload mid-upload: Golden Retriever restores the file and tus resumes from the
    # server's offset.
    again = tmp_path / "again.bin"
    again.write_bytes(os.urandom(80 * MB))
    page.goto("/upload/")
    add_files(page, [again])
    before = proxy.upstream_bytes
    start_upload(page)

    # Pause in the Dashboard: nothing moves and nothing reaches the server; resume continues from there.
    wait_for_progress(page, "again.bin", 0.2)
    page.get_by_role("button", name="Pause upload").first.click()
    time.sleep(0.5)  # the PATCH in flight is aborted
    paused, paused_bytes = progress_of(page, "again.bin"), proxy.upstream_bytes
    time.sleep(1.5)
    assert progress_of(page, "again.bin")["bytesUploaded"] == paused["bytesUploaded"] < paused["bytesTotal"]
    assert proxy.upstream_bytes == paused_bytes
    page.get_by_role("button", name="Resume upload").first.click()

    wait_for_progress(page, "again.bin", 0.4)
    page.reload()
    page.wait_for_function(ALL_DONE, timeout=180_000)
    sent = proxy.upstream_bytes - before
    print(f"reload: the server received {sent / again.stat().st_size:.3f}x the file's size")
    assert sent < 1.3 * again.stat().st_size, f"sent {sent} bytes for {again.stat().st_size} after a reload"
    stored_again = UploadFile.objects.get(owner=user, original_filename="again.bin")
    assert stored_again.sha256 == sha256_of(again)

    # The list: four files, each with a live countdown.
    page.goto("/files/")
    assert sorted(page.locator("td.name").all_inner_texts()) == ["again.bin", "big.bin", "data.bin", "notes.txt"]
    assert page.locator("time.countdown").count() == 4

    # Download one and compare its SHA-256.
    row = page.locator("tbody tr", has_text="data.bin")
    with page.expect_download() as download_info:
        row.get_by_role("link", name="Download data.bin").click()
    assert hashlib.sha256(download_info.value.path().read_bytes()).hexdigest() == sha256_of(data)

    # Delete one.
    page.locator("tbody tr", has_text="notes.txt").get_by_role("link", name="Delete notes.txt").click()
    page.get_by_role("button", name="Delete notes.txt").click()
    assert sorted(page.locator("td.name").all_inner_texts()) == ["again.bin", "big.bin", "data.bin"]
    assert problems.csp_violations() == []


def test_refused_file_shows_the_server_reason_next_to_it(proxied, tmp_path):
    _, page, problems, _ = proxied
    png = tmp_path / "picture.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(8000))
    fine = tmp_path / "fine.txt"
    fine.write_text("accepted\n")

    page.goto("/upload/")
    add_files(page, [png, fine])
    start_upload(page)
    refused = page.locator("#file-progress li", has_text="picture.png")
    refused.locator(".state", has_text="Refused").wait_for(timeout=60_000)
    reason = REFUSED_PNG_REASON
    assert refused.locator(".state").inner_text() == f"Refused: {reason}"
    # Uppy's Dashboard shows the same words on the file's own item (its error button's label and tooltip).
    item = page.locator(".uppy-Dashboard-Item", has_text="picture.png")
    assert item.get_by_role("button", name=reason).is_visible()
    page.locator("#file-progress li.done", has_text="fine.txt").wait_for(timeout=60_000)
    page.locator("#batch-text", has_text="1 uploaded, 1 failed.").wait_for(timeout=10_000)
    assert not UploadFile.objects.filter(original_filename="picture.png").exists()
    assert problems.csp_violations() == []
