"""The HTTP response that streams a stored file, shared by the API and the pages."""

from __future__ import annotations

import base64
from typing import IO

from django.http import FileResponse

from portal.models import UploadFile


def download_response(*, upload: UploadFile, handle: IO[bytes]) -> FileResponse:
    """Stream `handle` as an attachment (never inline) with its length and checksums."""
    response = FileResponse(
        handle,
        as_attachment=True,
        filename=upload.original_filename,
        content_type=upload.content_type or "application/octet-stream",
    )
    response["Content-Length"] = str(upload.size_bytes)
    response["X-Content-Type-Options"] = "nosniff"
    response["X-Checksum-SHA256"] = upload.sha256
    # RFC 9530 form of the same checksum, for clients that verify digests generically.
    response["Repr-Digest"] = f"sha-256=:{base64.b64encode(bytes.fromhex(upload.sha256)).decode()}:"
    response["Cache-Control"] = "private, no-store"
    return response
