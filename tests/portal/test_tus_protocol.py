"""The tus 1.0 protocol rules through a real gunicorn (two workers): requests, and raw sockets where needed."""

from __future__ import annotations

import base64
import hashlib
import uuid

import pytest
import requests

from portal.models import ResumableUpload, UploadFile
from tests.portal.conftest import events, files_on_disk
from tests.portal.server import start_gunicorn
from tests.portal.tus_http import (
    OFFSET_STREAM,
    TUS,
    auth,
    checksum_header,
    create,
    create_url,
    download,
    head,
    metadata,
    offset_of,
    open_patch,
    patch,
    read_status,
    staging_file,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_media")]

LIMIT = 1024 * 1024
MAX_ACTIVE = 3
TEXT = b"the quick brown fox jumps over the lazy dog\n" * 200
GZIP = b"\x1f\x8b\x08\x00" + b"\x00" * 8000


@pytest.fixture(scope="module")
def server(test_database_url, tmp_path_factory):
    media = tmp_path_factory.mktemp("media")
    proc, base = start_gunicorn(
        "gunicorn-tus",
        test_database_url,
        tmp_path_factory.mktemp("logs"),
        media,
        workers=2,
        FILE_UPLOAD_MAX_SIZE=str(LIMIT),
        FILE_UPLOAD_ALLOWED_TYPES="image/png,text/plain,application/pdf,application/octet-stream",
        FILE_UPLOAD_CHUNK_SIZE="65536",
        FILE_UPLOAD_MAX_ACTIVE_UPLOADS=str(MAX_ACTIVE),
    )
    yield base, media
    proc.stop()


def code_of(response: requests.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Tus-Resumable"] == "1.0.0"
    return response.json()["error"]["code"]


def test_options_advertises_the_server_without_auth(server):
    base, _ = server
    for url in (f"{base}/api/uploads/", f"{base}/api/uploads/{uuid.uuid4()}"):
        response = requests.options(url, timeout=10)
        assert response.status_code == 204
        assert response.headers["Tus-Resumable"] == response.headers["Tus-Version"] == "1.0.0"
        assert set(response.headers["Tus-Extension"].split(",")) == {
            "creation",
            "creation-with-upload",
            "creation-defer-length",
            "expiration",
            "checksum",
            "termination",
            "concatenation",
        }
        assert response.headers["Tus-Max-Size"] == str(LIMIT)
        assert set(response.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "sha256", "md5"}


def test_other_or_missing_version_gets_412_and_auth_is_required(server, make_user):
    base, _ = server
    _, token = make_user("alice")
    for version in ({"Tus-Resumable": "0.2.2"}, {}):
        response = requests.post(
            f"{base}/api/uploads/", headers={"Authorization": f"Bearer {token}", "Upload-Length": "5", **version}
        )
        assert code_of(response, 412) == "unsupported_tus_version" and response.headers["Tus-Version"] == "1.0.0"
    response = requests.post(f"{base}/api/uploads/", headers={**TUS, "Upload-Length": "5"}, timeout=10)
    assert code_of(response, 401) == "invalid_token"
    assert UploadFile.objects.count() == 0


def test_upload_in_pieces_is_hidden_until_stored_then_served(server, make_user):
    base, media = server
    _, token = make_user("alice")
    sha = hashlib.sha256(TEXT).hexdigest()
    response = create(
        base, token, len(TEXT), **{"Upload-Metadata": metadata(filename="notes.txt", ttl_hours="2", sha256=sha)}
    )
    assert response.status_code == 201 and response.headers["Upload-Expires"]
    url = response.headers["Location"]
    upload_id = url.rsplit("/", 1)[-1]
    state = head(url, token)
    assert state.status_code == 200 and state.headers["Upload-Offset"] == "0"
    assert state.headers["Upload-Length"] == str(len(TEXT)) and state.headers["Cache-Control"] == "no-store"
    assert "filename" in state.headers["Upload-Metadata"] and state.content == b""

    pieces = [TEXT[:5000], TEXT[5000:7000], TEXT[7000:]]
    offset = 0
    for piece in pieces[:-1]:
        response = patch(url, token, offset, piece)
        offset += len(piece)
        assert response.status_code == 204 and response.headers["Upload-Offset"] == str(offset)
        assert response.headers["Upload-Expires"]
        # Unfinished: not a file yet; no event.
        listing = requests.get(f"{base}/api/files", headers=auth(token), timeout=10).json()
        assert listing["count"] == 0
        assert (
            requests.get(f"{base}/api/files/{upload_id}/download", headers=auth(token), timeout=10).status_code == 404
        )
        assert events() == []
    response = patch(url, token, offset, pieces[-1])
    assert response.status_code == 204 and response.headers["Upload-Offset"] == str(len(TEXT))
    assert "Upload-Expires" not in response.headers

    assert download(base, token, upload_id) == TEXT
    detail = requests.get(f"{base}/api/files/{upload_id}", headers=auth(token), timeout=10).json()
    assert detail["name"] == "notes.txt" and detail["sha256"] == sha and detail["content_type"] == "text/plain"
    (row,) = UploadFile.objects.all()
    stored_at = row.expires_at.timestamp() - 2 * 3600
    assert abs(stored_at - row.created_at.timestamp()) < 60  # ttl_hours=2, counted from when it was stored
    assert [e.event_type for e in events()] == ["file.stored"]
    assert files_on_disk(media) == [media / "uploads" / row.storage_name]
    final = head(url, token)
    assert final.headers["Upload-Offset"] == final.headers["Upload-Length"] == str(len(TEXT))


def test_wrong_offset_content_type_and_missing_offset(server, make_user):
    base, _ = server
    _, token = make_user("alice")
    url = create_url(base, token, len(TEXT))
    assert patch(url, token, 0, TEXT[:100]).status_code == 204
    assert code_of(patch(url, token, 0, TEXT[:100]), 409) == "offset_mismatch"
    assert code_of(patch(url, token, 500, TEXT[:100]), 409) == "offset_mismatch"
    wrong_type = requests.patch(
        url, data=b"x", headers={**auth(token), "Upload-Offset": "100", "Content-Type": "text/plain"}, timeout=10
    )
    assert code_of(wrong_type, 415) == "invalid_content_type"
    no_offset = requests.patch(url, data=b"x", headers={**auth(token), **OFFSET_STREAM}, timeout=10)
    assert code_of(no_offset, 400) == "invalid_upload_offset"
    assert offset_of(url, token) == 100


def test_body_past_upload_length_is_refused_and_nothing_past_it_written(server, make_user):
    base, media = server
    _, token = make_user("alice")
    url = create_url(base, token, 1000)
    assert patch(url, token, 0, TEXT[:400]).status_code == 204
    # Declared too long: refused before reading.
    assert code_of(patch(url, token, 400, TEXT[:601]), 413) == "upload_length_exceeded"
    # Chunked, no Content-Length: refused when the bytes pass the length.
    response = patch(url, token, 400, iter([TEXT[:300], TEXT[300:700]]))
    assert code_of(response, 413) == "upload_length_exceeded"
    assert offset_of(url, token) == 400
    assert staging_file(media, url).stat().st_size == 400
    assert patch(url, token, 400, TEXT[400:1000]).status_code == 204
    assert UploadFile.objects.get().status == UploadFile.Status.STORED


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"Upload-Length": str(LIMIT + 1)}, 413, "file_too_large"),
        ({"Upload-Length": "0"}, 400, "empty_file"),
        ({}, 400, "missing_upload_length"),
        ({"Upload-Length": "-4"}, 400, "invalid_upload_length"),
        ({"Upload-Length": "10", "Upload-Defer-Length": "1"}, 400, "invalid_upload_length"),
        ({"Upload-Length": "10", "Upload-Metadata": "filename !!!"}, 400, "invalid_metadata"),
        ({"Upload-Length": "10", "Upload-Metadata": metadata(filename="../x")}, 400, "filename_path_traversal"),
        (
            {"Upload-Length": "10", "Upload-Metadata": metadata(filename="\u2024\u2024\u2215x")},
            400,
            "filename_path_traversal",
        ),
        (
            {"Upload-Length": "10", "Upload-Metadata": "filename " + base64.b64encode(b"caf\xe9").decode()},
            400,
            "filename_not_utf8",
        ),
        ({"Upload-Length": "10", "Upload-Metadata": metadata(name="a.txt", ttl_hours="0")}, 400, "invalid_ttl"),
        ({"Upload-Length": "10", "Upload-Metadata": metadata(filename="a", sha256="x")}, 400, "invalid_checksum"),
        ({"Upload-Length": "10", "Upload-Metadata": ""}, 400, "filename_empty"),
    ],
)
def test_bad_creation_requests_keep_nothing(server, make_user, headers, status, code):
    base, media = server
    _, token = make_user("alice")
    headers.setdefault("Upload-Metadata", metadata(filename="a.txt"))
    response = requests.post(f"{base}/api/uploads/", headers={**auth(token), **headers}, timeout=10)
    assert code_of(response, status) == code
    assert UploadFile.objects.count() == 0 and files_on_disk(media) == []


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "md5"])
def test_checksum_per_patch(server, make_user, algorithm):
    base, media = server
    _, token = make_user("alice")
    url = create_url(base, token, len(TEXT))
    good = patch(url, token, 0, TEXT[:3000], **{"Upload-Checksum": checksum_header(algorithm, TEXT[:3000])})
    assert good.status_code == 204
    bad = patch(url, token, 3000, TEXT[3000:6000], **{"Upload-Checksum": checksum_header(algorithm, b"other")})
    assert code_of(bad, 460) == "chunk_checksum_mismatch"
    assert offset_of(url, token) == 3000 and staging_file(media, url).stat().st_size == 3000
    unknown = patch(url, token, 3000, TEXT[3000:], **{"Upload-Checksum": "crc32 AAAAAA=="})
    assert code_of(unknown, 400) == "unsupported_checksum_algorithm"
    assert patch(url, token, 3000, TEXT[3000:]).status_code == 204


def test_creation_with_upload_and_deferred_length(server, make_user):
    base, _ = server
    _, token = make_user("alice")
    response = create(base, token, len(TEXT), data=None, **OFFSET_STREAM)
    assert response.status_code == 201
    whole = requests.post(
        f"{base}/api/uploads/",
        data=TEXT,
        headers={
            **auth(token),
            **OFFSET_STREAM,
            "Upload-Length": str(len(TEXT)),
            "Upload-Metadata": metadata(filename="one.txt"),
        },
        timeout=10,
    )
    assert whole.status_code == 201 and whole.headers["Upload-Offset"] == str(len(TEXT))
    assert download(base, token, whole.headers["Location"].rsplit("/", 1)[-1]) == TEXT

    deferred = create_url(base, token, None, filename="later.txt")
    state = head(deferred, token)
    assert state.headers["Upload-Defer-Length"] == "1" and "Upload-Length" not in state.headers
    assert patch(deferred, token, 0, TEXT[:1000]).status_code == 204
    done = patch(deferred, token, 1000, TEXT[1000:], **{"Upload-Length": str(len(TEXT))})
    assert done.status_code == 204 and done.headers["Upload-Offset"] == str(len(TEXT))
    assert download(base, token, deferred.rsplit("/", 1)[-1]) == TEXT


def test_termination_removes_bytes_and_row_without_events(server, make_user):
    base, media = server
    _, token = make_user("alice")
    url = create_url(base, token, len(TEXT))
    assert patch(url, token, 0, TEXT[:2000]).status_code == 204
    assert requests.delete(url, headers=auth(token), timeout=10).status_code == 204
    assert code_of(patch(url, token, 2000, TEXT[2000:]), 404) == "not_found"
    assert head(url, token).status_code == 404
    assert UploadFile.objects.count() == 0 and files_on_disk(media) == [] and events() == []


def test_method_override_and_other_users(server, make_user):
    base, _ = server
    _, alice = make_user("alice")
    _, bob = make_user("bob")
    url = create_url(base, alice, len(TEXT))
    override = requests.post(
        url,
        data=TEXT[:10],
        headers={**auth(alice), **OFFSET_STREAM, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"},
        timeout=10,
    )
    assert override.status_code == 204 and override.headers["Upload-Offset"] == "10"
    for method in ("HEAD", "PATCH", "DELETE"):
        response = requests.request(
            method, url, headers={**auth(bob), **OFFSET_STREAM, "Upload-Offset": "10"}, data=b"x", timeout=10
        )
        assert response.status_code == 404
    assert code_of(requests.get(url, headers=auth(alice), timeout=10), 405) == "method_not_allowed"
    assert offset_of(url, alice) == 10


def test_quota_of_unfinished_uploads(server, make_user):
    base, _ = server
    _, token = make_user("alice")
    urls = [create_url(base, token, 100, filename=f"{i}.txt") for i in range(MAX_ACTIVE)]
    refused = create(base, token, 100)
    assert code_of(refused, 429) == "too_many_active_uploads" and str(MAX_ACTIVE) in refused.json()["error"]["message"]
    assert patch(urls[0], token, 0, TEXT[:100]).status_code == 204  # finished: no longer counts
    assert requests.delete(urls[1], headers=auth(token), timeout=10).status_code == 204
    assert create(base, token, 100).status_code == 201
    assert create(base, token, 100).status_code == 201
    assert create(base, token, 100).status_code == 429


def test_refused_type_on_first_bytes_and_whole_file_checksum_mismatch_keep_nothing(server, make_user):
    base, media = server
    _, token = make_user("alice")
    url = create_url(base, token, len(GZIP) * 10, filename="a.gz")
    assert code_of(patch(url, token, 0, GZIP), 415) == "type_not_allowed"
    assert head(url, token).status_code == 404
    wrong = hashlib.sha256(b"something else").hexdigest()
    url = create_url(base, token, len(TEXT), **{"Upload-Metadata": metadata(filename="a.txt", sha256=wrong)})
    assert patch(url, token, 0, TEXT[:5000]).status_code == 204
    assert code_of(patch(url, token, 5000, TEXT[5000:]), 400) == "checksum_mismatch"
    assert UploadFile.objects.count() == 0 and files_on_disk(media) == [] and events() == []


def test_concatenation_of_partial_uploads(server, make_user):
    base, media = server
    _, alice = make_user("alice")
    _, bob = make_user("bob")
    halves = [TEXT[:4000], TEXT[4000:]]
    partials = [create_url(base, alice, len(h), **{"Upload-Concat": "partial"}) for h in halves]
    assert patch(partials[1], alice, 0, halves[1]).status_code == 204
    final_header = {"Upload-Concat": "final;" + " ".join(partials), "Upload-Metadata": metadata(filename="j.txt")}
    unfinished = requests.post(f"{base}/api/uploads/", headers={**auth(alice), **final_header}, timeout=10)
    assert code_of(unfinished, 400) == "partial_upload_incomplete"
    assert patch(partials[0], alice, 0, halves[0]).status_code == 204
    as_bob = requests.post(f"{base}/api/uploads/", headers={**auth(bob), **final_header}, timeout=10)
    assert code_of(as_bob, 400) == "unknown_partial_upload"
    assert requests.get(f"{base}/api/files", headers=auth(alice), timeout=10).json()["count"] == 0
    assert events() == []

    final = requests.post(f"{base}/api/uploads/", headers={**auth(alice), **final_header}, timeout=10)
    assert final.status_code == 201, final.text
    url = final.headers["Location"]
    state = head(url, alice)
    assert state.headers["Upload-Concat"] == final_header["Upload-Concat"]
    assert state.headers["Upload-Offset"] == state.headers["Upload-Length"] == str(len(TEXT))
    assert code_of(patch(url, alice, len(TEXT), b"x"), 403) == "final_upload_not_patchable"
    assert download(base, alice, url.rsplit("/", 1)[-1]) == TEXT
    # The partial uploads are gone: one file, one event, one file on disk.
    assert [p.status_code for p in (head(u, alice) for u in partials)] == [404, 404]
    assert UploadFile.objects.count() == 1 and ResumableUpload.objects.count() == 1
    assert [e.event_type for e in events()] == ["file.stored"] and len(files_on_disk(media)) == 1


def test_raw_patch_answers_on_the_socket(server, make_user):
    """A raw PATCH (no client library): Content-Length exact, 204 with the new offset."""
    base, _ = server
    _, token = make_user("alice")
    url = create_url(base, token, len(TEXT))
    sock = open_patch(url, token, 0, 1234)
    try:
        sock.sendall(TEXT[:1234])
        assert read_status(sock) == 204
    finally:
        sock.close()
    assert offset_of(url, token) == 1234


def test_limits_on_deferred_lengths_final_uploads_and_creation_bodies(server, make_user):
    base, _ = server
    _, token = make_user("alice")
    deferred = create_url(base, token, None)
    too_long = patch(deferred, token, 0, TEXT[:10], **{"Upload-Length": str(LIMIT + 1)})
    assert code_of(too_long, 413) == "file_too_large"
    assert offset_of(deferred, token) == 0
    requests.delete(deferred, headers=auth(token), timeout=10)

    halves = [create_url(base, token, LIMIT // 2 + 1, **{"Upload-Concat": "partial"}) for _ in range(2)]
    for url in halves:
        assert patch(url, token, 0, b"t" * (LIMIT // 2 + 1)).status_code == 204
    final = requests.post(
        f"{base}/api/uploads/",
        headers={
            **auth(token),
            "Upload-Concat": "final;" + " ".join(halves),
            "Upload-Metadata": metadata(filename="a"),
        },
        timeout=10,
    )
    assert code_of(final, 413) == "file_too_large"
    for url in halves:
        assert requests.delete(url, headers=auth(token), timeout=10).status_code == 204

    # creation-with-upload whose body is refused: the upload exists, and the error says where.
    refused = requests.post(
        f"{base}/api/uploads/",
        data=TEXT[:100],
        headers={
            **auth(token),
            **OFFSET_STREAM,
            "Upload-Length": str(len(TEXT)),
            "Upload-Metadata": metadata(filename="a.txt"),
            "Upload-Checksum": checksum_header("sha1", b"not this"),
        },
        timeout=10,
    )
    assert code_of(refused, 460) == "chunk_checksum_mismatch"
    assert offset_of(refused.headers["Location"], token) == 0
    assert UploadFile.objects.count() == 1 and events() == []
