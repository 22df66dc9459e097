"""The official tus-js-client (Node), which we do not write, against a real gunicorn: an interrupted upload
that resumes where it stopped, and parallelUploads (partial uploads concatenated into a final one)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from urllib.parse import urlsplit

import pytest

from portal.models import UploadFile
from tests.portal.conftest import events
from tests.portal.cutting_proxy import CuttingProxy
from tests.portal.server import start_gunicorn
from tests.portal.tus_http import download, offset_of
from tests.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SIZE = 6 * 1024 * 1024


@pytest.fixture(scope="module")
def server(test_database_url, tmp_path_factory):
    media = tmp_path_factory.mktemp("media")
    proc, base = start_gunicorn("gunicorn-tus-js", test_database_url, tmp_path_factory.mktemp("logs"), media, workers=2)
    yield base
    proc.stop()


@pytest.fixture
def source(tmp_path):
    data = os.urandom(SIZE)
    path = tmp_path / "source.bin"
    path.write_bytes(data)
    return path, data


def run_client(script, **options) -> dict:
    """Run tus-js-client once; its one JSON line says how it ended."""
    result = subprocess.run(
        ["node", str(script), json.dumps(options)], capture_output=True, text=True, timeout=180, check=False
    )
    lines = result.stdout.strip().splitlines()
    assert lines, f"tus-js-client printed nothing (exit {result.returncode}):\n{result.stderr[-3000:]}"
    return json.loads(lines[-1])


def assert_one_stored_file(base: str, token: str, url: str, data: bytes) -> None:
    upload_id = url.rsplit("/", 1)[-1]
    assert hashlib.sha256(download(base, token, upload_id)).digest() == hashlib.sha256(data).digest()
    (row,) = UploadFile.objects.all()
    assert str(row.id) == upload_id and row.status == UploadFile.Status.STORED and row.original_filename == "c.bin"
    assert [e.event_type for e in events()] == ["file.stored"]


@pytest.fixture
def proxy(server):
    """The server behind a proxy that drops the first connection after 2 MiB from the client (mid-PATCH)."""
    cutter = CuttingProxy(upstream_port=urlsplit(server).port, cut_after=2 * 1024 * 1024)
    yield f"http://127.0.0.1:{cutter.port}", cutter
    cutter.close()


def test_interrupted_upload_resumes_where_it_stopped(proxy, make_user, source, tus_js_client):
    base, cutter = proxy
    _, token = make_user("alice")
    path, data = source
    common = {"endpoint": f"{base}/api/uploads/", "token": token, "path": str(path), "filename": "c.bin"}
    # One PATCH for the whole file; the network drops it mid-body, and this client does not retry.
    first = run_client(tus_js_client, **common, retryDelays=[])
    assert first["event"] == "error" and first["url"], first
    assert cutter.cuts == 1
    # The server kept what arrived before the drop (once it has seen the connection close).
    kept = wait_until(lambda: offset_of(first["url"], token), timeout=30, what="the server to commit what arrived")
    assert 1024 * 1024 < kept < 2 * 1024 * 1024
    assert UploadFile.objects.get().status == UploadFile.Status.UPLOADING and events() == []

    # A new client process resumes from the server's offset (a PATCH from 0 would get 409).
    second = run_client(tus_js_client, **common, uploadUrl=first["url"], chunkSize=1024 * 1024)
    assert second == {"event": "success", "url": first["url"]}
    assert_one_stored_file(base, token, first["url"], data)


def test_client_retries_a_dropped_patch_by_itself(proxy, make_user, source, tus_js_client):
    base, cutter = proxy
    _, token = make_user("alice")
    path, data = source
    # The first retry waits 1 s. In a loaded CI run an immediate retry once left the client stalled (it exited
    # printing nothing). The suspected cause: the retry reached the server before it had seen the cut connection
    # close and released the upload. A PATCH to a held upload is answered 423 with its body unread and the
    # connection is then reset (seen with a raw socket sending 6 MiB: the response arrives, the sender gets
    # EPIPE), and this client listens for no error on a response (upload.mjs).
    outcome = run_client(
        tus_js_client, endpoint=f"{base}/api/uploads/", token=token, path=str(path), filename="c.bin",
        retryDelays=[1000, 2000, 4000],
    )  # fmt: skip
    assert outcome["event"] == "success" and cutter.cuts == 1, outcome
    assert_one_stored_file(base, token, outcome["url"], data)


def test_parallel_uploads_are_concatenated(server, make_user, source, tus_js_client):
    _, token = make_user("alice")
    path, data = source
    outcome = run_client(
        tus_js_client,
        endpoint=f"{server}/api/uploads/",
        token=token,
        path=str(path),
        filename="c.bin",
        parallelUploads=3,
        chunkSize=1024 * 1024,
    )
    assert outcome["event"] == "success", outcome
    # Only the final upload remains: the three partial uploads were removed once assembled.
    assert_one_stored_file(server, token, outcome["url"], data)
