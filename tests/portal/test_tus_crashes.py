"""tus uploads when things go wrong, with real processes: four gunicorn workers, dropped connections,
two PATCHes at once, kill -9 of the worker mid-PATCH, and a server restart between two halves of an upload."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from pathlib import Path

import pytest

from portal.models import UploadFile
from tests.portal.server import start_gunicorn, worker_pids
from tests.portal.tus_http import create_url, download, offset_of, open_patch, patch, read_status, staging_file
from tests.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SIZE = 4 * 1024 * 1024
CHECKPOINT = 256 * 1024
DATA = os.urandom(SIZE)
SETTINGS = {
    "FILE_UPLOAD_CHUNK_SIZE": "65536",
    "FILE_UPLOAD_RESUMABLE_CHECKPOINT_BYTES": str(CHECKPOINT),
}


@pytest.fixture(scope="module")
def server(test_database_url, tmp_path_factory):
    """Four sync workers: the requests of one upload land on different processes."""
    media = tmp_path_factory.mktemp("media")
    proc, base = start_gunicorn(
        "gunicorn-tus-crash", test_database_url, tmp_path_factory.mktemp("logs"), media, workers=4, **SETTINGS
    )
    yield proc, base, media
    proc.stop()


def upload_id_of(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def assert_stored_identical(base: str, token: str, url: str) -> None:
    body = download(base, token, upload_id_of(url))
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(DATA).hexdigest()
    assert UploadFile.objects.get(pk=upload_id_of(url)).status == UploadFile.Status.STORED


def test_dropped_connection_keeps_exactly_the_bytes_received(server, make_user):
    _, base, media = server
    _, token = make_user("alice")
    url = create_url(base, token, SIZE, filename="data.bin")
    sent = 1_000_003  # not a multiple of anything the server uses
    sock = open_patch(url, token, 0, SIZE)
    sock.sendall(DATA[:sent])
    sock.close()  # gone mid-body
    wait_until(lambda: offset_of(url, token) == sent, timeout=30, what="the offset to count every byte that arrived")
    assert staging_file(media, url).read_bytes()[:sent] == DATA[:sent]
    assert patch(url, token, sent, DATA[sent:]).status_code == 204
    assert_stored_identical(base, token, url)


def test_two_patches_at_once_one_wins_and_bytes_never_interleave(server, make_user):
    _, base, media = server
    _, token = make_user("alice")
    url = create_url(base, token, SIZE, filename="data.bin")
    holder = open_patch(url, token, 0, SIZE)
    try:
        holder.sendall(DATA[:100_000])
        wait_until(lambda: staging_file(media, url).stat().st_size >= 65536, timeout=30, what="the first PATCH")
        # Same offset, while the first is mid-body in another worker: refused, nothing written.
        assert patch(url, token, 0, b"x" * 50_000).status_code == 423
        holder.sendall(DATA[100_000:])
        assert read_status(holder) == 204
    finally:
        holder.close()
    assert_stored_identical(base, token, url)

    # Both whole at the same moment: exactly one succeeds.
    url = create_url(base, token, SIZE, filename="data.bin")
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(patch(url, token, 0, DATA).status_code)) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(statuses)[0] == 204 and sorted(statuses)[1] in {409, 423}, statuses
    assert_stored_identical(base, token, url)


def _worker_writing(master_pid: int, path: Path) -> int:
    for pid in worker_pids(master_pid):
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                if os.readlink(fd) == str(path):
                    return pid
            except OSError:  # closed meanwhile
                continue
    return 0


def test_kill_9_of_the_worker_mid_patch_never_overstates_the_offset(server, make_user):
    proc, base, media = server
    _, token = make_user("alice")
    url = create_url(base, token, SIZE, filename="data.bin")
    path = staging_file(media, url)
    sock = open_patch(url, token, 0, SIZE)
    try:
        sock.sendall(DATA[:1_500_000])
        wait_until(lambda: offset_of(url, token) >= CHECKPOINT, timeout=30, what="a checkpoint to be committed")
        pid = wait_until(lambda: _worker_writing(proc.pid, path), timeout=10, what="the worker holding the file")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: pid not in worker_pids(proc.pid), timeout=30, what="the killed worker to be gone")
    finally:
        sock.close()
    # Another process answers: the offset is a committed checkpoint, never past what is on disk.
    offset = offset_of(url, token)
    assert CHECKPOINT <= offset <= 1_500_000
    assert path.read_bytes()[:offset] == DATA[:offset]
    # The lock died with the worker's database session: the resume is not refused.
    assert patch(url, token, offset, DATA[offset:]).status_code == 204
    assert_stored_identical(base, token, url)


def test_upload_begun_before_a_restart_resumes_after_it(make_user, test_database_url, tmp_path):
    media = tmp_path / "media"
    _, token = make_user("alice")
    first, base = start_gunicorn("gunicorn-before", test_database_url, tmp_path, media, workers=2, **SETTINGS)
    try:
        url = create_url(base, token, SIZE, filename="data.bin")
        assert patch(url, token, 0, DATA[: SIZE // 2]).status_code == 204
    finally:
        first.stop()
    second, base = start_gunicorn("gunicorn-after", test_database_url, tmp_path, media, workers=2, **SETTINGS)
    try:
        url = f"{base}/api/uploads/{upload_id_of(url)}"
        assert offset_of(url, token) == SIZE // 2
        assert patch(url, token, SIZE // 2, DATA[SIZE // 2 :]).status_code == 204
        assert_stored_identical(base, token, url)
    finally:
        second.stop()
