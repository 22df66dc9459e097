"""Client-supplied file names: validated with a stable error code, kept for display only."""

from __future__ import annotations

import re
import unicodedata

from django.conf import settings

from portal.services.errors import UploadRejected

# "C:", "C:\\x", and drive-relative "C:x" on Windows; "1:1 notes.txt" is just a name.
_DRIVE = re.compile(r"[A-Za-z]:")
# Control, format (bidi overrides such as U+202E, zero-width spaces), surrogates, line/paragraph separators:
# invisible or reordering characters that let a name display as something it is not.
_HIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}
# ZERO WIDTH NON-JOINER / JOINER are format characters that ordinary Persian, Indic and emoji text needs.
_ALLOWED_FORMAT = {"\u200c", "\u200d"}


def validate_display_filename(*, raw: str) -> str:
    """The client's name, checked and normalised for display; raises UploadRejected if unusable."""
    if "\x00" in raw:
        raise UploadRejected("filename_nul_byte", "The file name contains a NUL byte.")
    if not raw.strip():
        raise UploadRejected("filename_empty", "The file name is empty.")
    parts = raw.replace("\\", "/").split("/")
    if raw.startswith(("/", "\\")) or ".." in parts or _DRIVE.match(raw):
        raise UploadRejected("filename_path_traversal", "The file name must not contain a path.")
    if len(parts) > 1:
        raise UploadRejected("filename_path_traversal", "The file name must not contain directories.")
    name = unicodedata.normalize("NFC", raw).strip()
    if any(unicodedata.category(ch) in _HIDDEN_CATEGORIES and ch not in _ALLOWED_FORMAT for ch in name):
        raise UploadRejected(
            "filename_control_character", "The file name contains control or invisible formatting characters."
        )
    limit = settings.FILE_UPLOAD_MAX_NAME_LENGTH
    if len(name) > limit or len(name.encode("utf-8")) > 4 * limit:
        raise UploadRejected("filename_too_long", f"The file name is longer than {limit} characters.")
    if name in {".", ".."}:
        raise UploadRejected("filename_path_traversal", "The file name must not be a directory reference.")
    return name
