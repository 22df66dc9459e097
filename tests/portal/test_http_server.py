"""Uploads through a real gunicorn process with `requests` and raw sockets: bad inputs, limits, isolation."""

from __future__ import annotations

import hashlib
import socket
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from portal.models import UploadFile
from tests.portal.conftest import events, files_on_disk
from tests.portal.server import start_gunicorn

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_media")]

LIMIT = 1024 * 1024
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.7\n" + b"x" * 500
GZIP = b"\x1f\x8b\x08\x00" + b"\x00" * 300
BOUNDARY = "doorito-test-boundary"


@pytest.fixture(scope="module")
def server(test_database_url, tmp_path_factory):
    """One gunicorn for the module, with a 1 MiB limit and an allow-list."""
    media = tmp_path_factory.mktemp("media")
    proc, base = start_gunicorn(
        "gunicorn-api",
        test_database_url,
        tmp_path_factory.mktemp("logs"),
        media,
        FILE_UPLOAD_MAX_SIZE=str(LIMIT),
        FILE_UPLOAD_ALLOWED_TYPES="image/png,text/plain,application/pdf",
        FILE_UPLOAD_CHUNK_SIZE="65536",
    )
    yield base, media
    proc.stop()


def part_head(filename: bytes | None, field: str = "file") -> bytes:
    disposition = f'form-data; name="{field}"'.encode()
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    return (
        f"--{BOUNDARY}\r\n".encode()
        + b"Content-Disposition: "
        + disposition
        + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )


def field(name: str, value: str) -> bytes:
    return part_head(None, name) + value.encode() + b"\r\n"


def body(filename: bytes | None, data: bytes, *fields: bytes) -> bytes:
    return b"".join(fields) + part_head(filename) + data + f"\r\n--{BOUNDARY}--\r\n".encode()


CT = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def post(base, token, payload, query="", **headers):
    return requests.post(
        f"{base}/api/files{query}",
        data=payload,
        headers={**CT, "Authorization": f"Bearer {token}", **headers},
        timeout=30,
    )


def assert_nothing_kept(media):
    assert UploadFile.objects.count() == 0
    assert files_on_disk(media) == []
    assert events() == []


def assert_raw_refusal(response: bytes, status: int, media, code: str | None = None) -> None:
    """A raw-socket answer has this status (and error code), and the server kept nothing."""
    assert response.startswith(f"HTTP/1.1 {status}".encode()), response[:300]
    if code is not None:
        assert f'"{code}"'.encode() in response, response[:300]
    assert_nothing_kept(media)


def error_code(response, status):
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"] == "application/json"
    return response.json()["error"]["code"]


@pytest.mark.parametrize(
    ("filename", "data", "code"),
    [
        (b"../../etc/passwd", b"x", "filename_path_traversal"),
        (b"..\\..\\boot.ini", b"x", "filename_path_traversal"),
        (b"/etc/passwd", b"x", "filename_path_traversal"),
        (b"dir/a.txt", b"x", "filename_path_traversal"),
        (b"a\x00.txt", b"x", "filename_nul_byte"),
        (b"a\x07.txt", b"x", "filename_control_character"),
        (b"n" * 252 + b".txt", b"x", "filename_too_long"),
        # Past Django's 1 KiB of part headers, once answered malformed_multipart.
        (b"n" * 946 + b".txt", b"x", "filename_too_long"),
        (b"n" * 1996 + b".txt", b"x", "filename_too_long"),
        (b"caf\xe9.txt", b"x", "filename_not_utf8"),  # Latin-1, once answered missing_file
        # Look-alikes that a client folding names (NFKC, or slash look-alikes to "/") turns into a path.
        ("\uff0e\uff0e\uff0fetc\uff0fpasswd".encode(), b"x", "filename_path_traversal"),
        (b"empty.txt", b"", "empty_file"),
        (b"report.pdf", GZIP, "type_not_allowed"),
        (b"image.png", PDF, "type_mismatch"),
        (b"notes.pdf", b"just text\n" * 10, "type_mismatch"),
    ],
)
def test_bad_file_parts_are_refused_and_nothing_is_kept(server, make_user, filename, data, code):
    base, media = server
    _, token = make_user("alice")
    status = 415 if code.startswith("type_") else 400
    assert error_code(post(base, token, body(filename, data)), status) == code
    assert_nothing_kept(media)


@pytest.mark.parametrize("name", ["n" * 251 + ".txt", "\U0001f600" * 251 + ".txt"])
def test_name_at_the_length_limit_is_stored_as_sent(server, make_user, name):
    """255 characters, also 4 bytes each in UTF-8 (over 1 KiB of part headers), are within the limit."""
    base, _ = server
    _, token = make_user("alice")
    response = post(base, token, body(name.encode(), b"at the limit"))
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name


def test_missing_file_part_wrong_field_and_malformed_body(server, make_user):
    base, media = server
    _, token = make_user("alice")
    assert error_code(post(base, token, field("name", "x") + f"--{BOUNDARY}--\r\n".encode()), 400) == "missing_file"
    assert (
        error_code(post(base, token, part_head(b"a.txt", "upload") + b"x\r\n--" + BOUNDARY.encode() + b"--\r\n"), 400)
        == "unexpected_file_field"
    )
    truncated = part_head(b"a.txt") + b"no closing boundary"
    assert error_code(post(base, token, truncated), 400) in {"incomplete_body", "malformed_multipart"}
    response = requests.post(f"{base}/api/files", data=b"x", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert error_code(response, 415) == "not_multipart"
    assert_nothing_kept(media)


def test_bad_ttl_and_checksum(server, make_user):
    base, media = server
    _, token = make_user("alice")
    assert error_code(post(base, token, body(b"a.txt", b"hi"), query="?ttl_hours=100000"), 400) == "invalid_ttl"
    assert error_code(post(base, token, body(b"a.txt", b"hi", field("ttl_hours", "soon"))), 400) == "invalid_ttl"
    wrong = hashlib.sha256(b"something else").hexdigest()
    assert error_code(post(base, token, body(b"a.txt", b"hi", field("sha256", wrong))), 400) == "checksum_mismatch"
    assert error_code(post(base, token, body(b"a.txt", b"hi"), query="?sha256=xyz"), 400) == "invalid_checksum"
    assert_nothing_kept(media)
    right = hashlib.sha256(b"hi").hexdigest()
    assert post(base, token, body(b"a.txt", b"hi"), query=f"?sha256={right.upper()}").status_code == 201


def test_wrong_method_and_bad_tokens(server, make_user):
    base, _ = server
    _, token = make_user("alice")
    auth = {"Authorization": f"Bearer {token}"}
    response = requests.put(f"{base}/api/files", headers=auth, timeout=10)
    assert error_code(response, 405) == "method_not_allowed" and response.headers["Allow"] == "GET, POST, HEAD"
    assert (
        error_code(requests.post(f"{base}/api/files/{uuid.uuid4()}", headers=auth, timeout=10), 405)
        == "method_not_allowed"
    )
    for headers in ({}, {"Authorization": "Bearer dt_wrong"}, {"Authorization": token}):
        assert error_code(requests.get(f"{base}/api/files", headers=headers, timeout=10), 401) == "invalid_token"
    assert error_code(post(base, "dt_wrong", body(b"a.txt", b"hi")), 401) == "invalid_token"


def chunks(total: int, size: int = 64 * 1024):
    block = b"t" * size
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield block[:n]
        sent += n


def test_too_large_streamed_without_content_length_gets_413_and_nothing_kept(server, make_user):
    base, media = server
    _, token = make_user("alice")

    def generator():  # a generator body: chunked, no Content-Length to trust or to lie
        yield part_head(b"big.txt")
        yield from chunks(LIMIT + 1)
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    assert error_code(post(base, token, generator()), 413) == "file_too_large"
    assert_nothing_kept(media)
    # Exactly at the limit is fine.
    ok = post(base, token, body(b"fits.txt", b"t" * LIMIT))
    assert ok.status_code == 201 and ok.json()["size"] == LIMIT


def raw_request(base: str, head: str) -> socket.socket:
    parts = urlsplit(base)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=15)
    sock.sendall(head.encode())
    return sock


def raw_upload(base: str, token: str, length: str) -> socket.socket:
    """A socket with the head of a POST /api/files sent; `length` is its Content-Length or Transfer-Encoding line."""
    return raw_request(
        base,
        f"POST /api/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{length}\r\n\r\n",
    )


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or (b'"}}' not in data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_413_arrives_while_the_client_is_still_sending(server, make_user):
    """The limit is enforced on received bytes: the answer comes before the (never-ending) body does."""
    base, media = server
    _, token = make_user("alice")
    sock = raw_upload(base, token, "Transfer-Encoding: chunked")
    try:
        payload = part_head(b"endless.txt") + b"e" * (LIMIT + 128 * 1024)
        for i in range(0, len(payload), 32 * 1024):
            piece = payload[i : i + 32 * 1024]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        # No terminating chunk, no closing boundary: the server must answer anyway.
        response = read_response(sock)
    finally:
        sock.close()
    assert_raw_refusal(response, 413, media, "file_too_large")


def test_declared_content_length_over_the_limit_is_refused_before_reading(server, make_user):
    base, media = server
    _, token = make_user("alice")
    sock = raw_upload(base, token, f"Content-Length: {50 * LIMIT}")
    try:
        response = read_response(sock)
    finally:
        sock.close()
    assert_raw_refusal(response, 413, media, "file_too_large")


def test_content_length_shorter_than_the_body_keeps_nothing(server, make_user):
    """A Content-Length that lies low cuts the body: the upload is incomplete, not stored."""
    base, media = server
    _, token = make_user("alice")
    payload = body(b"a.txt", b"y" * 5000)
    sock = raw_upload(base, token, "Content-Length: 1000")
    try:
        sock.sendall(payload)
        response = read_response(sock)
    finally:
        sock.close()
    assert_raw_refusal(response, 400, media)


@pytest.mark.parametrize("framing", ["content-length", "chunked", "bad-chunk-size"])
def test_client_that_goes_away_mid_body_gets_400_incomplete_body(server, make_user, framing):
    """Only read-side failures are the client's: a body cut off (or broken framing) is 400, and nothing is kept."""
    base, media = server
    _, token = make_user("alice")
    payload = part_head(b"cut.txt") + b"c" * 200_000
    length = "Transfer-Encoding: chunked" if framing != "content-length" else f"Content-Length: {len(payload) * 2}"
    sock = raw_upload(base, token, length)
    try:
        if framing == "content-length":
            sock.sendall(payload)
        else:
            sock.sendall(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            if framing == "bad-chunk-size":
                sock.sendall(b"zz\r\nmore\r\n")
        sock.shutdown(socket.SHUT_WR)  # the client is gone: no more bytes will ever come
        response = read_response(sock)
    finally:
        sock.close()
    assert_raw_refusal(response, 400, media, "incomplete_body")


@pytest.mark.parametrize("client_end", ["half-close", "hang-up"])
def test_body_shorter_than_its_content_length_keeps_nothing(server, make_user, client_end):
    """A whole multipart body, declared 1,000 bytes longer: the server waits for the rest, and when the client
    ends (half-close: 400 incomplete_body; hang-up: no one to answer) nothing is stored and no event is sent."""
    base, media = server
    _, token = make_user("alice")
    payload = body(b"short.txt", b"s" * 5000)
    sock = raw_upload(base, token, f"Content-Length: {len(payload) + 1000}")
    try:
        sock.sendall(payload)
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):  # the multipart is whole, but the body is not: no answer yet
            sock.recv(1)
        sock.settimeout(15)
        if client_end == "half-close":
            sock.shutdown(socket.SHUT_WR)
            assert_raw_refusal(read_response(sock), 400, media, "incomplete_body")
    finally:
        sock.close()
    # The server's one sync worker answers this only once it has finished with the cut request.
    assert requests.get(f"{base}/healthz", timeout=15).status_code == 200
    assert_nothing_kept(media)


def test_two_users_are_isolated(server, make_user):
    base, media = server
    _, alice = make_user("alice")
    _, bob = make_user("bob")
    created = post(base, alice, body(b"alice.png", PNG))
    assert created.status_code == 201
    file_id = created.json()["id"]
    as_bob = {"Authorization": f"Bearer {bob}"}
    for method, path in (("get", ""), ("get", "/download"), ("delete", "")):
        response = requests.request(method, f"{base}/api/files/{file_id}{path}", headers=as_bob, timeout=10)
        assert error_code(response, 404) == "not_found"
    assert requests.get(f"{base}/api/files", headers=as_bob, timeout=10).json()["count"] == 0

    as_alice = {"Authorization": f"Bearer {alice}"}
    listing = requests.get(f"{base}/api/files", headers=as_alice, timeout=10).json()
    assert [f["id"] for f in listing["results"]] == [file_id]
    download = requests.get(f"{base}/api/files/{file_id}/download", headers=as_alice, timeout=10)
    assert download.content == PNG
    assert download.headers["Content-Type"] == "image/png"
    assert download.headers["Content-Disposition"] == 'attachment; filename="alice.png"'
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert download.headers["X-Checksum-SHA256"] == hashlib.sha256(PNG).hexdigest()
    assert len(files_on_disk(media)) == 1
    assert [e.event_type for e in events()] == ["file.stored"]
