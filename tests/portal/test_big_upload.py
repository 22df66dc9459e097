"""One 300 MB upload and download through a real gunicorn: memory stays flat, bytes and checksum survive."""

from __future__ import annotations

import hashlib

import pytest
import requests

from portal.models import UploadFile
from tests.portal.conftest import events, files_on_disk
from tests.portal.server import peak_rss_bytes, start_gunicorn, worker_pid

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MB = 1024 * 1024
SIZE = 300 * MB
BOUNDARY = "big-upload-boundary"


def test_300_mb_upload_streams_with_bounded_server_memory(make_user, test_database_url, tmp_path):
    proc, base = start_gunicorn(
        "gunicorn-big", test_database_url, tmp_path, tmp_path / "media", FILE_UPLOAD_MAX_SIZE=str(400 * MB)
    )
    try:
        _, token = make_user("alice")
        worker = worker_pid(proc.pid)
        before = peak_rss_bytes(worker)
        block = bytes(range(256)) * 4096  # 1 MiB, not all-zero so nothing can compress it away
        digest = hashlib.sha256()

        def body():  # generated on the fly: the client holds 1 MiB at a time too
            yield (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            for _ in range(SIZE // MB):
                digest.update(block)
                yield block
            yield f"\r\n--{BOUNDARY}--\r\n".encode()

        response = requests.post(
            f"{base}/api/files",
            data=body(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            timeout=300,
        )
        assert response.status_code == 201, response.text
        assert response.json()["size"] == SIZE and response.json()["sha256"] == digest.hexdigest()
        after_upload = peak_rss_bytes(worker)

        download = requests.get(
            f"{base}/api/files/{response.json()['id']}/download",
            headers={"Authorization": f"Bearer {token}"},
            stream=True,
            timeout=300,
        )
        assert download.status_code == 200 and int(download.headers["Content-Length"]) == SIZE
        check = hashlib.sha256()
        for piece in download.iter_content(MB):
            check.update(piece)
        assert check.hexdigest() == digest.hexdigest() == download.headers["X-Checksum-SHA256"]
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
