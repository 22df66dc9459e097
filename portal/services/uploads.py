"""Receiving an upload: streamed to staging with its SHA-256, size limit and type checked on the way.

Memory stays flat whatever the size: the multipart body is read in FILE_UPLOAD_CHUNK_SIZE steps and each
chunk goes straight to a staging file on the storage's disk, so storing it is a rename (or, for a remote
backend, a streamed copy). The size limit counts the bytes actually received, never a declared length.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import IO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files import File
from django.core.files.uploadhandler import FileUploadHandler
from django.db import transaction
from django.http.multipartparser import MultiPartParser, MultiPartParserError
from django.utils import timezone

from portal.models import UploadFile
from portal.services.content_types import SNIFF_BYTES, check_content_type, sniff_content_type
from portal.services.errors import StorageFailed, UploadRejected
from portal.services.events import emit_file_event
from portal.services.filenames import validate_display_filename
from portal.services.removal import delete_upload_bytes, staging_path, upload_storage

FILE_FIELD = "file"
# Room for the multipart envelope (boundaries, part headers, small fields) on top of the file itself.
ENVELOPE_BYTES = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")

logger = logging.getLogger(__name__)

try:  # gunicorn reports broken chunked framing with its own (non-OSError) exceptions
    from gunicorn.http.errors import ParseException as _FramingError
except ImportError:  # pragma: no cover - another WSGI server
    _FramingError = OSError

# What reading the request body raises when the client goes away or sends broken framing:
# OSError covers Django's UnreadablePostError, gunicorn's NoMoreData, resets and socket timeouts.
_CLIENT_READ_ERRORS = (OSError, _FramingError)


def parse_ttl_hours(*, raw: str | None) -> int:
    """The TTL in hours a client asked for (default FILE_UPLOAD_TTL_HOURS); raises UploadRejected if invalid."""
    if raw is None or raw == "":
        return settings.FILE_UPLOAD_TTL_HOURS
    try:
        hours = int(raw)
    except ValueError:
        raise UploadRejected("invalid_ttl", "ttl_hours must be a whole number of hours.") from None
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


class _ClientGone(Exception):
    """Reading the request body failed: the client's side, whatever the exception was."""


class _ClientStream:
    """The request body, read-only; a failed read becomes _ClientGone, so an OSError elsewhere is the server's."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def read(self, *args) -> bytes:
        try:
            return self._stream.read(*args)
        except _CLIENT_READ_ERRORS as exc:
            raise _ClientGone(str(exc) or type(exc).__name__) from exc


class _StagedFile(File):
    """A fully received upload on local disk; storages move (or stream) it from its path."""

    def __init__(self, path, name: str) -> None:
        super().__init__(open(path, "rb"), name=name)  # noqa: SIM115 - closed by the caller
        self._path = str(path)

    def temporary_file_path(self) -> str:
        return self._path


class _StreamingParser(MultiPartParser):
    """Django's multipart parser, but names are judged before Django strips their paths silently."""

    def sanitize_file_name(self, file_name):
        return validate_display_filename(raw=file_name)


class _StagingHandler(FileUploadHandler):
    """Writes the one `file` part to staging, hashing, counting and sniffing each chunk as it arrives."""

    def __init__(self, *, owner: AbstractBaseUser, now: datetime) -> None:
        super().__init__()
        self.chunk_size = settings.FILE_UPLOAD_CHUNK_SIZE
        self.owner = owner
        self.now = now
        self.upload: UploadFile | None = None
        self.content_type: str | None = None
        self.size = 0
        self._digest = hashlib.sha256()
        self._head = b""
        self._out: IO[bytes] | None = None

    def new_file(self, field_name, file_name, content_type, content_length, charset=None, content_type_extra=None):
        if field_name != FILE_FIELD:
            raise UploadRejected("unexpected_file_field", f"Send the file in the form field {FILE_FIELD!r}.")
        if self.upload is not None:
            raise UploadRejected("too_many_files", "Send one file per request.")
        self.upload = begin_upload(owner=self.owner, original_filename=file_name, now=self.now)
        path = staging_path(upload_id=self.upload.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(path, "xb")  # noqa: SIM115 - closed in file_complete or close()

    def receive_data_chunk(self, raw_data, start):
        self.size += len(raw_data)
        if self.size > settings.FILE_UPLOAD_MAX_SIZE:
            raise UploadRejected(
                "file_too_large", f"The file exceeds {settings.FILE_UPLOAD_MAX_SIZE} bytes.", status=413
            )
        if self.content_type is None:
            self._head += raw_data[: SNIFF_BYTES - len(self._head)]
            if len(self._head) >= SNIFF_BYTES:
                self._decide_type()
        self._digest.update(raw_data)
        self._out.write(raw_data)
        return None  # no other handler sees the bytes: nothing is buffered

    def file_complete(self, file_size):
        if self.content_type is None and self._head:
            self._decide_type()
        self._out.close()
        return _StagedFile(staging_path(upload_id=self.upload.id), name=self.upload.storage_name)

    def close(self) -> None:
        if self._out is not None and not self._out.closed:
            self._out.close()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _decide_type(self) -> None:
        # Rejecting on the first bytes means a disallowed type never streams in full.
        self.content_type = sniff_content_type(head=self._head)
        check_content_type(sniffed=self.content_type, filename=self.upload.original_filename)


def begin_upload(*, owner: AbstractBaseUser, original_filename: str, now: datetime | None = None) -> UploadFile:
    """Record an upload as `uploading` (committed), so a crash mid-stream leaves a row cleanup will find."""
    now = now or timezone.now()
    upload_id = uuid.uuid4()
    return UploadFile.objects.create(
        id=upload_id,
        owner=owner,
        original_filename=original_filename,
        # Generated by the server: the client's name never becomes a path.
        storage_name=f"{upload_id.hex[:2]}/{upload_id.hex}",
        created_at=now,
        expires_at=now + timedelta(hours=settings.FILE_UPLOAD_TTL_HOURS),
    )


def abandon_upload(*, upload: UploadFile) -> None:
    """Remove an upload that will not be stored: mark it failed, delete its bytes, delete its row."""
    from portal.services.removal import finish_removed_upload

    UploadFile.objects.filter(pk=upload.pk, status=UploadFile.Status.UPLOADING).update(status=UploadFile.Status.FAILED)
    delete_upload_bytes(upload=upload)
    finish_removed_upload(upload_id=upload.id)


def receive_upload(
    *,
    owner: AbstractBaseUser,
    meta: Mapping[str, str],
    stream: IO[bytes],
    params: Mapping[str, str],
    now: datetime | None = None,
    check_fields: Callable[[Mapping[str, str]], None] | None = None,
) -> UploadFile:
    """Stream a multipart upload to storage and mark it stored with file.stored, or keep nothing and raise.

    `check_fields` sees the form fields before anything is stored and may raise UploadRejected
    (the pages' plain form checks its CSRF token there, since the body is only read here).
    """
    now = now or timezone.now()
    if not meta.get("CONTENT_TYPE", "").startswith("multipart/form-data"):
        raise UploadRejected("not_multipart", "Send the file as multipart/form-data.", status=415)
    declared = meta.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > settings.FILE_UPLOAD_MAX_SIZE + ENVELOPE_BYTES:
        # Only a fast path: the real limit is counted on the bytes received.
        raise UploadRejected("file_too_large", f"The file exceeds {settings.FILE_UPLOAD_MAX_SIZE} bytes.", status=413)
    # Query parameters are checked before any byte is read; form fields after.
    ttl_hours = parse_ttl_hours(raw=params.get("ttl_hours"))
    client_sha256 = parse_client_sha256(raw=params.get("sha256"))

    handler = _StagingHandler(owner=owner, now=now)
    parser_meta = dict(meta)
    if not declared.isdigit():
        # A chunked body has no Content-Length; Django's parser would see an empty body without one.
        parser_meta["CONTENT_LENGTH"] = str(settings.FILE_UPLOAD_MAX_SIZE + ENVELOPE_BYTES)
    staged = None
    try:
        try:
            fields, files = _StreamingParser(parser_meta, _ClientStream(stream), [handler]).parse()
        except MultiPartParserError as exc:
            raise UploadRejected("malformed_multipart", f"The multipart body is malformed: {exc}") from None
        except (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent) as exc:
            raise UploadRejected("too_many_fields", str(exc), status=413) from None
        except _ClientGone as exc:
            raise UploadRejected("incomplete_body", f"The request body ended early: {exc}") from None
        except OSError as exc:  # reads are _ClientGone, so this is staging: mkdir, open, write, close
            raise _storage_failed(exc, upload=handler.upload, step="staging") from exc
        staged = files.get(FILE_FIELD)
        if check_fields is not None:
            check_fields(fields)
        if staged is None:
            if handler.upload is not None:
                raise UploadRejected("incomplete_body", "The file part ended before its closing boundary.")
            raise UploadRejected("missing_file", f"The request has no file part named {FILE_FIELD!r}.")
        if handler.size == 0:
            raise UploadRejected("empty_file", "The file is empty.")
        if "ttl_hours" in fields:
            ttl_hours = parse_ttl_hours(raw=fields["ttl_hours"])
        client_sha256 = parse_client_sha256(raw=fields.get("sha256")) or client_sha256
        if client_sha256 is not None and not hmac.compare_digest(client_sha256, handler.sha256):
            raise UploadRejected(
                "checksum_mismatch", f"The file's SHA-256 is {handler.sha256}, not the {client_sha256} you sent."
            )
        return _store(
            handler=handler, staged=staged, ttl_hours=ttl_hours, content_type=handler.content_type or "", now=now
        )
    except BaseException:
        _discard(handler=handler, staged=staged)
        raise


def _storage_failed(exc: OSError, *, upload: UploadFile | None, step: str) -> StorageFailed:
    logger.exception(
        "upload %s: %s failed on the server: %s",
        upload.id if upload else None,
        step,
        exc,
        extra={"event": "portal.upload_storage_failed", "upload_id": str(upload.id) if upload else None},
    )
    return StorageFailed(exc)


def _discard(*, handler: _StagingHandler, staged: File | None) -> None:
    # Runs while another exception is on its way out: nothing here may replace it. If removal fails,
    # the row stays `uploading` or `failed`, which cleanup takes once FILE_UPLOAD_UPLOADING_GRACE_HOURS pass.
    with contextlib.suppress(OSError):  # a flush failing on bytes being thrown away changes nothing
        handler.close()
    if staged is not None:
        staged.close()  # opened read-only: nothing to flush
    if handler.upload is None:
        return
    try:
        abandon_upload(upload=handler.upload)
    except Exception:
        upload_id = str(handler.upload.id)
        logger.exception(
            "upload %s: removing the failed upload failed; cleanup will finish it",
            upload_id,
            extra={"event": "portal.upload_abandon_failed", "upload_id": upload_id},
        )


def _store(*, handler: _StagingHandler, staged: File, ttl_hours: int, content_type: str, now: datetime) -> UploadFile:
    upload = handler.upload
    try:
        saved_name = upload_storage().save(upload.storage_name, staged)
    except OSError as exc:
        raise _storage_failed(exc, upload=upload, step="storing") from exc
    finally:
        staged.close()
    if saved_name != upload.storage_name:  # the storage renamed it: a name clash must never be silent
        upload_storage().delete(saved_name)
        raise UploadRejected("storage_conflict", "The storage refused the generated name.", status=500)
    with transaction.atomic():
        row = UploadFile.objects.select_for_update().filter(pk=upload.pk, status=UploadFile.Status.UPLOADING).first()
        if row is None:  # cleanup judged it stuck and took it; do not resurrect it
            raise UploadRejected("upload_abandoned", "The upload took too long and was discarded.", status=408)
        row.status = UploadFile.Status.STORED
        row.size_bytes = handler.size
        row.sha256 = handler.sha256
        row.content_type = content_type
        row.expires_at = row.created_at + timedelta(hours=ttl_hours)
        row.save(update_fields=["status", "size_bytes", "sha256", "content_type", "expires_at"])
        emit_file_event(event_type="file.stored", upload=row)
    return row
