"""The type of an upload, decided from its first bytes (magic numbers), never from its name alone."""

from __future__ import annotations

import mimetypes

from django.conf import settings

from portal.services.errors import UploadRejected

# How many leading bytes the sniffer needs; uploads are buffered only up to this before deciding.
SNIFF_BYTES = 4096

# (offset, signature, type); the first match wins, so longer/more specific signatures come first.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"PK\x05\x06", "application/zip"),
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"BZh", "application/x-bzip2"),
    (0, b"\xfd7zXZ\x00", "application/x-xz"),
    (0, b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (0, b"\x28\xb5\x2f\xfd", "application/zstd"),
    (257, b"ustar", "application/x-tar"),
    (4, b"ftyp", "video/mp4"),
    (0, b"\x1a\x45\xdf\xa3", "video/webm"),
    (0, b"OggS", "audio/ogg"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"fLaC", "audio/flac"),
    (0, b"\x00\x00\x01\x00", "image/x-icon"),
    (0, b"BM", "image/bmp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
)
# Container formats whose first bytes say RIFF; the real type sits at offset 8.
_RIFF = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}
# Extensions that legitimately carry a different sniffed container (e.g. .docx is a zip).
_SAME_CONTAINER = {
    "application/zip": {
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/java-archive",
        "application/epub+zip",
        "application/vnd.oasis.opendocument.text",
    },
    "video/mp4": {"audio/mp4", "video/quicktime", "image/heic", "image/avif", "audio/x-m4a"},
    "application/gzip": {"application/x-gzip", "application/x-tar"},
}
TEXT = "text/plain"
BINARY = "application/octet-stream"


def sniff_content_type(*, head: bytes) -> str:
    """The MIME type the leading bytes prove; text/plain for clean UTF-8 text, else octet-stream."""
    for offset, signature, mime in _SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return mime
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head and b"\x00" not in head:
        # The sniff window may cut a multi-byte character; ignore at most 3 trailing bytes.
        for cut in range(4):
            try:
                head[: len(head) - cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
            return TEXT
    return BINARY


def check_content_type(*, sniffed: str, filename: str) -> None:
    """Raise UploadRejected unless the sniffed type is allowed and the name's extension does not contradict it."""
    allowed = [t.strip().lower() for t in settings.FILE_UPLOAD_ALLOWED_TYPES if t.strip()]
    if allowed and sniffed not in allowed:
        raise UploadRejected(
            "type_not_allowed",
            f"Content of type {sniffed} is not accepted; allowed: {', '.join(allowed)}.",
            status=415,
        )
    claimed, _ = mimetypes.guess_type(filename, strict=False)
    if not allowed or claimed is None or claimed == sniffed:
        return
    # Text has no magic number: any text-ish claim (csv, json, html...) is consistent with text content.
    if sniffed == TEXT and (claimed.startswith("text/") or claimed.endswith(("json", "xml", "javascript"))):
        return
    if claimed in _SAME_CONTAINER.get(sniffed, set()):
        return
    raise UploadRejected(
        "type_mismatch",
        f"The name says {claimed} but the content is {sniffed}.",
        status=415,
    )
