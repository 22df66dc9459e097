"""A WSGI app that reads each request body in FILE_UPLOAD_CHUNK_SIZE steps and throws it away.

Served by the same gunicorn as Doorito, it is the ceiling of any upload path: HTTP in, nothing stored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

STEP = int(os.environ.get("FILE_UPLOAD_CHUNK_SIZE", 256 * 1024))


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """Read the whole body, keep nothing, answer 204 (200 for the readiness probe)."""
    stream = environ["wsgi.input"]
    left = int(environ.get("CONTENT_LENGTH") or 0)
    while left > 0 and (data := stream.read(min(STEP, left))):
        left -= len(data)
    start_response("200 OK" if environ["PATH_INFO"] == "/healthz" else "204 No Content", [])
    return [b""]
