"""Options a client sets on an upload (query, form field or tus metadata): its TTL and its whole-file SHA-256."""

from __future__ import annotations

import re

from django.conf import settings

from portal.services.errors import UploadRejected

_SHA256 = re.compile(r"[0-9a-f]{64}")
# ASCII digits only: int() also takes fullwidth (U+FF11) and Arabic-Indic (U+0663) digits, "1_0", " 5" and "+5".
_ASCII_DIGITS = re.compile(r"[0-9]{1,9}")


def parse_ttl_hours(*, raw: str | None) -> int:
    """The TTL in hours a client asked for (default FILE_UPLOAD_TTL_HOURS); raises UploadRejected if invalid."""
    if raw is None or raw == "":
        return settings.FILE_UPLOAD_TTL_HOURS
    if not _ASCII_DIGITS.fullmatch(raw):
        raise UploadRejected("invalid_ttl", "ttl_hours must be a whole number of hours (ASCII digits 0-9).")
    hours = int(raw)
    if not 1 <= hours <= settings.FILE_UPLOAD_MAX_TTL_HOURS:
        raise UploadRejected("invalid_ttl", f"ttl_hours must be between 1 and {settings.FILE_UPLOAD_MAX_TTL_HOURS}.")
    return hours


def parse_client_sha256(*, raw: str | None) -> str | None:
    """The client's SHA-256 (hex, any case) or None; raises UploadRejected if malformed."""
    if raw is None or raw == "":
        return None
    value = raw.strip().lower()
    if not _SHA256.fullmatch(value):
        raise UploadRejected("invalid_checksum", "sha256 must be 64 hexadecimal characters.")
    return value
