"""Receiving an upload: streamed to staging with its SHA-256, size limit and type checked on the way.

Memory stays flat whatever the size: the multipart body is read in FILE_UPLOAD_CHUNK_SIZE steps and each
chunk goes straight to a staging file on the storage's disk, so storing it is a rename (or, for a remote
backend, a streamed copy). The size limit counts the bytes actually received, never a declared length.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import IO, Any, cast

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import QueryDict
from django.http.multipartparser import MultiPartParser, MultiPartParserError
from django.utils import timezone
from django.utils.datastructures import MultiValueDict

from portal.models import UploadFile
from portal.services.content_types import SNIFF_BYTES, check_content_type, sniff_content_type
from portal.services.errors import UploadRejected
from portal.services.filenames import validate_display_filename
from portal.services.multipart import read_form
from portal.services.removal import staging_path
from portal.services.request_body import ByteSource, ClientGone, ClientStream
from portal.services.staged_uploads import (
    StagedContent,
    begin_upload,
    discard_upload,
    storage_failed,
    store_staged_upload,
)
from portal.services.upload_options import parse_client_sha256, parse_ttl_hours

FILE_FIELD = "file"
# Room for the multipart envelope (boundaries, part headers, small fields) on top of the file itself.
ENVELOPE_BYTES = 1024 * 1024


class _StagingHandler(FileUploadHandler):
    """Writes the one `file` part to staging, hashing, counting and sniffing each chunk as it arrives.

    It reads the body itself (portal.services.multipart), for part headers Django's parser cannot report well.
    """

    def __init__(self, *, owner: User, now: datetime) -> None:
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

    def handle_raw_input(
        self,
        input_data: Any,
        META: dict[str, str],
        content_length: int,
        boundary: str | bytes,  # bytes from MultiPartParser, str in django-stubs
        encoding: str | None = None,
    ) -> tuple[QueryDict, MultiValueDict[str, UploadedFile]]:
        # Django's hook for a handler that reads the whole body itself; MultiPartParser has checked the boundary.
        separator = boundary if isinstance(boundary, bytes) else boundary.encode("ascii")
        return read_form(stream=input_data, boundary=separator, chunk_size=self.chunk_size, handler=self)

    def new_file(
        self,
        field_name: str,
        file_name: str,
        content_type: str,
        content_length: int | None,
        charset: str | None = None,
        content_type_extra: dict[str, bytes] | None = None,
    ) -> None:
        if field_name != FILE_FIELD:
            raise UploadRejected("unexpected_file_field", f"Send the file in the form field {FILE_FIELD!r}.")
        if self.upload is not None:
            raise UploadRejected("too_many_files", "Send one file per request.")
        name = validate_display_filename(raw=file_name)
        self.upload = begin_upload(owner=self.owner, original_filename=name, now=self.now)
        path = staging_path(upload_id=self.upload.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(path, "xb")  # noqa: SIM115 - closed in file_complete or close()

    def _staged(self) -> tuple[UploadFile, IO[bytes]]:
        # Django calls new_file before any chunk, so both exist once data arrives.
        if self.upload is None or self._out is None:
            raise UploadRejected("malformed_multipart", "File data arrived before its part headers.")
        return self.upload, self._out

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
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
        self._staged()[1].write(raw_data)
        return None  # no other handler sees the bytes: nothing is buffered

    def file_complete(self, file_size: int) -> UploadedFile:
        if self.content_type is None and self._head:
            self._decide_type()
        upload, out = self._staged()
        out.close()
        # A marker for the parser (it needs a truthy file object); the bytes stay in staging, unopened.
        return UploadedFile(None, name=upload.storage_name, size=file_size)

    def close(self) -> None:
        if self._out is not None and not self._out.closed:
            self._out.close()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    @property
    def head(self) -> bytes:
        return self._head

    def _decide_type(self) -> None:
        # Rejecting on the first bytes means a disallowed type never streams in full.
        self.content_type = sniff_content_type(head=self._head)
        check_content_type(sniffed=self.content_type, filename=self._staged()[0].original_filename)


def receive_upload(
    *,
    owner: User,
    meta: Mapping[str, str],
    stream: ByteSource,
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
    raw_length = meta.get("CONTENT_LENGTH") or ""
    declared = int(raw_length) if raw_length.isdigit() else None
    if declared is not None and declared > settings.FILE_UPLOAD_MAX_SIZE + ENVELOPE_BYTES:
        # Only a fast path: the real limit is counted on the bytes received.
        raise UploadRejected("file_too_large", f"The file exceeds {settings.FILE_UPLOAD_MAX_SIZE} bytes.", status=413)
    # Query parameters are checked before any byte is read; form fields after.
    ttl_hours = parse_ttl_hours(raw=params.get("ttl_hours"))
    client_sha256 = parse_client_sha256(raw=params.get("sha256"))

    handler = _StagingHandler(owner=owner, now=now)
    parser_meta = dict(meta)
    if declared is None:
        # A chunked body has no Content-Length; Django's parser would see an empty body without one.
        parser_meta["CONTENT_LENGTH"] = str(settings.FILE_UPLOAD_MAX_SIZE + ENVELOPE_BYTES)
    try:
        try:
            # The body is only read() (through Django's ChunkIter); the parser's stub asks for the whole file protocol.
            # The declared length is counted: a body that ends short of it is incomplete, however whole it looks.
            body = cast(Any, ClientStream(stream, length=declared))
            fields, files = MultiPartParser(parser_meta, body, [handler]).parse()
        except MultiPartParserError as exc:
            raise UploadRejected("malformed_multipart", f"The multipart body is malformed: {exc}") from None
        except ClientGone as exc:
            raise UploadRejected("incomplete_body", f"The request body ended early: {exc}") from None
        except OSError as exc:  # reads are ClientGone, so this is staging: mkdir, open, write, close
            raise storage_failed(exc, upload=handler.upload, step="staging") from exc
        if check_fields is not None:
            check_fields(fields)
        upload = handler.upload
        if files.get(FILE_FIELD) is None or upload is None:
            if upload is not None:
                raise UploadRejected("incomplete_body", "The file part ended before its closing boundary.")
            raise UploadRejected("missing_file", f"The request has no file part named {FILE_FIELD!r}.")
        if "ttl_hours" in fields:
            ttl_hours = parse_ttl_hours(raw=fields.get("ttl_hours"))
        client_sha256 = parse_client_sha256(raw=fields.get("sha256")) or client_sha256
        content = StagedContent(size=handler.size, sha256=handler.sha256, head=handler.head)
        return store_staged_upload(
            upload=upload,
            content=content,
            client_sha256=client_sha256,
            expires_at=upload.created_at + timedelta(hours=ttl_hours),
        )
    except BaseException:
        with contextlib.suppress(OSError):  # a flush failing on bytes being thrown away changes nothing
            handler.close()
        if handler.upload is not None:
            discard_upload(upload=handler.upload)
        raise
