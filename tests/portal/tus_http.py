"""Speaking tus to a real server by hand: requests for whole messages, raw sockets for cut or held bodies."""

from __future__ import annotations

import base64
import hashlib
import socket
from pathlib import Path
from urllib.parse import urlsplit

import requests

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = {"Content-Type": "application/offset+octet-stream"}


def metadata(**values: str) -> str:
    """An Upload-Metadata header: key base64(value), comma-separated."""
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **TUS}


def create(base: str, token: str, length: int | None, filename: str = "notes.txt", **headers: str) -> requests.Response:
    """POST /api/uploads/ for an upload of `length` bytes (None: deferred); returns the response."""
    sizes = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
    return requests.post(
        f"{base}/api/uploads/",
        headers={**auth(token), **sizes, "Upload-Metadata": metadata(filename=filename), **headers},
        timeout=30,
    )


def create_url(base: str, token: str, length: int | None, filename: str = "notes.txt", **headers: str) -> str:
    """Create an upload and return its URL."""
    response = create(base, token, length, filename, **headers)
    assert response.status_code == 201, (response.status_code, response.text)
    return response.headers["Location"]


def patch(url: str, token: str, offset: int, data: bytes, **headers: str) -> requests.Response:
    return requests.patch(
        url, data=data, headers={**auth(token), **OFFSET_STREAM, "Upload-Offset": str(offset), **headers}, timeout=60
    )


def head(url: str, token: str) -> requests.Response:
    return requests.head(url, headers=auth(token), timeout=30)


def offset_of(url: str, token: str) -> int:
    response = head(url, token)
    assert response.status_code == 200, response.status_code
    return int(response.headers["Upload-Offset"])


def checksum_header(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def open_patch(url: str, token: str, offset: int, content_length: int) -> socket.socket:
    """Start a PATCH on a raw socket, headers only: the caller sends (some of) the body and closes."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(
        (
            f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
            f"Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Upload-Offset: {offset}\r\nContent-Length: {content_length}\r\nConnection: close\r\n\r\n"
        ).encode()
    )
    return sock


def read_status(sock: socket.socket) -> int:
    """The status code of the response on `sock`."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def staging_file(media: Path, url: str) -> Path:
    """Where the server stages the bytes of the upload at `url`."""
    return media / "incoming" / f"{url.rstrip('/').rsplit('/', 1)[-1].replace('-', '')}.part"


def download(base: str, token: str, upload_id: str) -> bytes:
    response = requests.get(
        f"{base}/api/files/{upload_id}/download", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert response.status_code == 200, (response.status_code, response.text)
    return response.content
