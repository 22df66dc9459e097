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
# Slashes that NFKC leaves alone but that read as one, so a client folding look-alikes may make them a separator:
# DIVISION SLASH, FRACTION SLASH, BIG SOLIDUS; SET MINUS, REVERSE SOLIDUS OPERATOR, BIG REVERSE SOLIDUS.
_SLASH_LOOKALIKES = str.maketrans(dict.fromkeys("\u2215\u2044\u29f8", "/") | dict.fromkeys("\u2216\u29f5\u29f9", "\\"))


def filename_not_utf8() -> UploadRejected:
    """400 filename_not_utf8: the name's bytes are not UTF-8, so there is no text to check or show."""
    return UploadRejected("filename_not_utf8", "The file name is not valid UTF-8.")


def _path_problem(name: str) -> str | None:
    """Why `name` is (or points into) a path rather than a plain file name, or None."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or _DRIVE.match(name):
        return "must not contain a path"
    if len(parts) > 1:
        return "must not contain directories"
    if name.strip() in {".", ".."}:
        return "must not be a directory reference"
    return None


def _folded(name: str) -> str:
    """`name` as a client that folds look-alike characters may write it: NFKC, and look-alike slashes as slashes."""
    return unicodedata.normalize("NFKC", name).translate(_SLASH_LOOKALIKES)


def validate_display_filename(*, raw: str) -> str:
    """The client's name, checked as sent and as folded (NFKC), NFC-normalised for display; or UploadRejected."""
    if "\x00" in raw:
        raise UploadRejected("filename_nul_byte", "The file name contains a NUL byte.")
    if not raw.strip():
        raise UploadRejected("filename_empty", "The file name is empty.")
    problem = _path_problem(raw)
    if problem is not None:
        raise UploadRejected("filename_path_traversal", f"The file name {problem}.")
    name = unicodedata.normalize("NFC", raw).strip()
    if any(unicodedata.category(ch) in _HIDDEN_CATEGORIES and ch not in _ALLOWED_FORMAT for ch in name):
        raise UploadRejected(
            "filename_control_character", "The file name contains control or invisible formatting characters."
        )
    limit = settings.FILE_UPLOAD_MAX_NAME_LENGTH
    if len(name) > limit or len(name.encode("utf-8")) > 4 * limit:
        raise UploadRejected("filename_too_long", f"The file name is longer than {limit} characters.")
    # Harmless on our disk, but a client folding fullwidth dots and slashes into "../" would leave its folder.
    problem = _path_problem(_folded(name))
    if problem is not None:
        raise UploadRejected(
            "filename_path_traversal", f"The file name {problem} once look-alike characters are folded (NFKC)."
        )
    return name
