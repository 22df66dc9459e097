"""One 300 MB upload and download through a real gunicorn: memory stays flat, bytes and checksum survive."""

from __future__ import annotations

import pytest

from portal.models import UploadFile
from tests.portal.conftest import events, files_on_disk
from tests.portal.server import MB, download_sha256, peak_rss_bytes, start_gunicorn, upload_generated_file, worker_pid

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SIZE = 300 * MB


def test_300_mb_upload_streams_with_bounded_server_memory(make_user, test_database_url, tmp_path):
    proc, base = start_gunicorn(
        "gunicorn-big", test_database_url, tmp_path, tmp_path / "media", FILE_UPLOAD_MAX_SIZE=str(400 * MB)
    )
    try:
        _, token = make_user("alice")
        worker = worker_pid(proc.pid)
        before = peak_rss_bytes(worker)
        response, sent = upload_generated_file(base, token, SIZE)
        assert response.status_code == 201, response.text
        assert response.json()["size"] == SIZE and response.json()["sha256"] == sent
        after_upload = peak_rss_bytes(worker)

        download, received = download_sha256(base, token, response.json()["id"])
        assert download.status_code == 200 and int(download.headers["Content-Length"]) == SIZE
        assert received == sent == download.headers["X-Checksum-SHA256"]
        after_download = peak_rss_bytes(worker)
    finally:
        proc.stop()

    print(
        f"worker peak RSS: before {before / MB:.0f} MiB, after upload {after_upload / MB:.0f} MiB, "
        f"after download {after_download / MB:.0f} MiB, file {SIZE / MB:.0f} MiB"
    )
    # Flat: the 300 MiB went through a bounded buffer, in and out.
    assert after_download - before < 32 * MB
    # And the whole worker stays well below the file: buffering it anywhere would show here.
    assert after_download < SIZE / 2
    (row,) = UploadFile.objects.all()
    assert [p.stat().st_size for p in files_on_disk(tmp_path / "media")] == [SIZE]
    assert row.status == UploadFile.Status.STORED and len(events("file.stored")) == 1
