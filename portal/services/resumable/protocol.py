"""The tus 1.0 vocabulary: version, extensions, checksum algorithms, and parsing of the request headers."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils.http import http_date

from portal.services.errors import UploadRejected
from portal.services.filenames import filename_not_utf8
from portal.services.upload_options import parse_client_sha256, parse_ttl_hours

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "termination",
    "concatenation",
)
# sha1 is the one the checksum extension requires every server to support.
CHECKSUM_ALGORITHMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "md5": lambda: hashlib.md5(usedforsecurity=False),
}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
# The status the checksum extension gives a body whose checksum does not match.
CHECKSUM_MISMATCH_STATUS = 460

# Uppy sends `name` as well as `filename`; either is the display name.
_FILENAME_KEYS = ("filename", "name")
_METADATA_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True)
class UploadMetadata:
    """The Upload-Metadata a client sent, decoded; `raw` is answered back unchanged by HEAD."""

    raw: str
    filename: str | None
    filetype: str  # a hint only: the type is sniffed from the content
    ttl_hours: int
    client_sha256: str | None


@dataclass(frozen=True)
class Checksum:
    """An Upload-Checksum header: the algorithm and the digest the client expects for this request's body."""

    algorithm: str
    digest: bytes

    def new_hasher(self) -> Any:
        """A fresh hash object of this algorithm."""
        return CHECKSUM_ALGORITHMS[self.algorithm]()


@dataclass(frozen=True)
class Concat:
    """An Upload-Concat header: "" (none), "partial", or "final" with the partial uploads' ids in order."""

    kind: str
    partial_ids: tuple[uuid.UUID, ...] = ()
    raw: str = ""


def is_supported_version(*, raw: str | None) -> bool:
    """Whether a request's Tus-Resumable header names the version this server speaks."""
    return (raw or "").strip() == TUS_VERSION


def parse_size_header(*, raw: str | None, name: str) -> int | None:
    """A non-negative integer header (Upload-Length, Upload-Offset), None if absent; 400 if malformed."""
    if raw is None:
        return None
    value = raw.strip()
    if not _DIGITS.fullmatch(value):
        raise UploadRejected(f"invalid_{name.lower().replace('-', '_')}", f"{name} must be a non-negative integer.")
    return int(value)


def parse_metadata(*, raw: str | None) -> UploadMetadata:
    """Decode Upload-Metadata (`key base64value` pairs, comma-separated); 400 invalid_metadata if malformed."""
    raw = raw or ""
    values: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, _, encoded = pair.partition(" ")
        if not _METADATA_KEY.fullmatch(key) or key in values:
            raise UploadRejected("invalid_metadata", f"Upload-Metadata has an invalid or repeated key {key!r}.")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise UploadRejected("invalid_metadata", f"Upload-Metadata {key!r} is not base64.") from None
        try:
            values[key] = decoded.decode("utf-8")
        except UnicodeDecodeError:
            if key in _FILENAME_KEYS:  # the same refusal as a single-request upload's name
                raise filename_not_utf8() from None
            raise UploadRejected("invalid_metadata", f"Upload-Metadata {key!r} is not base64 of UTF-8 text.") from None
    return UploadMetadata(
        raw=raw,
        filename=next((values[key] for key in _FILENAME_KEYS if values.get(key)), None),
        filetype=values.get("filetype") or values.get("type", ""),
        ttl_hours=parse_ttl_hours(raw=values.get("ttl_hours")),
        client_sha256=parse_client_sha256(raw=values.get("sha256")),
    )


def parse_checksum(*, raw: str | None) -> Checksum | None:
    """Decode Upload-Checksum (`algorithm base64digest`); 400 for an unknown algorithm or a malformed digest."""
    if raw is None:
        return None
    algorithm, _, encoded = raw.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise UploadRejected(
            "unsupported_checksum_algorithm",
            f"Upload-Checksum algorithm {algorithm!r} is not one of {', '.join(CHECKSUM_ALGORITHMS)}.",
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        digest = b""
    if len(digest) != CHECKSUM_ALGORITHMS[algorithm]().digest_size:
        raise UploadRejected("invalid_upload_checksum", f"Upload-Checksum is not a base64 {algorithm} digest.")
    return Checksum(algorithm=algorithm, digest=digest)


def parse_concat(*, raw: str | None) -> Concat:
    """Decode Upload-Concat: `partial`, or `final;<url> <url>…` whose last path segments are upload ids."""
    value = (raw or "").strip()
    if not value:
        return Concat(kind="")
    if value == "partial":
        return Concat(kind="partial", raw=value)
    kind, _, urls = value.partition(";")
    if kind != "final" or not urls.split():
        raise UploadRejected("invalid_concat", 'Upload-Concat must be "partial" or "final;<url> <url>…".')
    ids = []
    for url in urls.split():
        try:
            ids.append(uuid.UUID(url.rstrip("/").rsplit("/", 1)[-1]))
        except ValueError:
            raise UploadRejected("invalid_concat", f"Upload-Concat names no upload of this server: {url!r}.") from None
    if len(set(ids)) != len(ids):
        raise UploadRejected("invalid_concat", "Upload-Concat names a partial upload twice.")
    return Concat(kind="final", partial_ids=tuple(ids), raw=value)


def http_expires(*, moment: datetime) -> str:
    """An Upload-Expires value: the RFC 9110 HTTP date of `moment`."""
    return http_date(moment.timestamp())
