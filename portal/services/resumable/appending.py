"""PATCH: append a request body at the upload's offset, durably, one request at a time.

The body streams to the staging file in FILE_UPLOAD_CHUNK_SIZE steps (memory stays flat). The offset in the
database only ever moves after an fsync, so it never counts a byte that is not durably on disk: at the end of
the request, every FILE_UPLOAD_RESUMABLE_CHECKPOINT_BYTES on the way, and when the client goes away mid-body
(the bytes received so far are kept). Whatever a crashed or refused request left past the committed offset is
cut off when the next request opens the file.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any, BinaryIO

from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from portal.models import ResumableUpload
from portal.services.content_types import SNIFF_BYTES, check_content_type, sniff_content_type
from portal.services.errors import UploadRejected
from portal.services.request_body import ByteSource, ClientGone, ClientStream
from portal.services.resumable.completion import complete_upload
from portal.services.resumable.creation import too_large
from portal.services.resumable.locking import upload_lock
from portal.services.resumable.protocol import CHECKSUM_MISMATCH_STATUS, Checksum
from portal.services.resumable.staging_files import cut_back, make_durable, open_at_offset
from portal.services.resumable.state import (
    UploadStatus,
    commit_progress,
    find_owned_upload,
    parse_upload_id,
    require_unexpired,
    status_of,
)
from portal.services.staged_uploads import discard_upload, storage_failed


def locked() -> UploadRejected:
    """423: another request holds this upload right now."""
    return UploadRejected("upload_locked", "Another request is writing to this upload; retry shortly.", status=423)


def append_to_upload(
    *,
    owner: User,
    upload_id: str,
    offset: int,
    body: ByteSource,
    content_length: int | None,
    checksum: Checksum | None = None,
    declared_length: int | None = None,
    now: datetime | None = None,
) -> UploadStatus:
    """Append `body` at `offset` (which must be the committed offset) and finish the upload at its last byte.

    409 for a wrong offset, 423 while another request holds the upload, 413 past Upload-Length (nothing past it
    written), 460 for a checksum mismatch (offset unchanged), 410 once expired.
    """
    now = now or timezone.now()
    with upload_lock(upload_id=parse_upload_id(raw=upload_id)) as held:
        # Looked up once, under the lock: the committed state, not what it was before another request finished.
        resumable = find_owned_upload(owner=owner, upload_id=upload_id)
        if not held:
            raise locked()
        require_unexpired(resumable=resumable, now=now)
        if resumable.concat == ResumableUpload.Concat.FINAL:
            raise UploadRejected(
                "final_upload_not_patchable", "A final (concatenated) upload takes no PATCH.", status=403
            )
        current = status_of(resumable=resumable)
        if offset != current.offset:
            raise UploadRejected(
                "offset_mismatch", f"Upload-Offset is {offset}, but the upload is at {current.offset}.", status=409
            )
        if declared_length is not None:
            _declare_length(resumable=resumable, length=declared_length)
        if current.stored:
            if content_length:
                raise _past_length(resumable.file.size_bytes)
            return current
        return _stream(
            resumable=resumable,
            body=ClientStream(body, length=content_length),
            content_length=content_length,
            checksum=checksum,
        )


def _past_length(length: int) -> UploadRejected:
    return UploadRejected(
        "upload_length_exceeded", f"The body goes past the upload's length of {length} bytes.", status=413
    )


def _declare_length(*, resumable: ResumableUpload, length: int) -> None:
    # creation-defer-length: the length is declared once, by a PATCH, and never changes afterwards.
    if resumable.length is not None:
        if length != resumable.length:
            raise UploadRejected("invalid_upload_length", f"Upload-Length is already {resumable.length}.")
        return
    if length > settings.FILE_UPLOAD_MAX_SIZE:
        raise too_large()
    if length < resumable.offset:
        raise UploadRejected("invalid_upload_length", f"Upload-Length is below the offset {resumable.offset}.")
    if length == 0 and resumable.concat != ResumableUpload.Concat.PARTIAL:
        raise UploadRejected("empty_file", "The file is empty.")
    ResumableUpload.objects.filter(pk=resumable.pk, length__isnull=True).update(length=length)
    resumable.length = length


class _Sniffer:
    """Checks the type as soon as the first SNIFF_BYTES of the file are in, so a refused type streams no further."""

    def __init__(self, *, resumable: ResumableUpload, handle: BinaryIO, start: int) -> None:
        self.resumable = resumable
        self.done = start >= SNIFF_BYTES or resumable.concat == ResumableUpload.Concat.PARTIAL
        self.head = b""
        if not self.done and start:
            handle.seek(0)
            self.head = handle.read(start)
            handle.seek(start)

    def feed(self, data: bytes, *, at_end: bool) -> None:
        if self.done:
            return
        self.head += data[: SNIFF_BYTES - len(self.head)]
        if len(self.head) >= SNIFF_BYTES or (at_end and self.head):
            self.done = True
            check_content_type(
                sniffed=sniff_content_type(head=self.head), filename=self.resumable.file.original_filename
            )


def _stream(
    *, resumable: ResumableUpload, body: ClientStream, content_length: int | None, checksum: Checksum | None
) -> UploadStatus:
    start = resumable.offset
    limit = resumable.length if resumable.length is not None else settings.FILE_UPLOAD_MAX_SIZE
    room = limit - start
    if content_length is not None and content_length > room:
        # Refused before reading: nothing of it is written.
        raise _past_length(limit) if resumable.length is not None else too_large()
    upload = resumable.file
    try:
        handle = open_at_offset(upload_id=upload.id, offset=start)
    except OSError as exc:
        raise storage_failed(exc, upload=upload, step="staging") from exc
    if handle is None:  # fewer bytes on disk than committed: the staging file was damaged or removed
        discard_upload(upload=upload)
        raise UploadRejected("upload_lost", "The upload's bytes were lost on the server; start again.", status=410)
    try:
        with handle:
            received = _receive(
                resumable=resumable,
                handle=handle,
                body=body,
                content_length=content_length,
                checksum=checksum,
                room=room,
            )
            make_durable(handle=handle)
    except OSError as exc:
        raise storage_failed(exc, upload=upload, step="staging") from exc
    end = start + received
    if end == resumable.length and resumable.concat != ResumableUpload.Concat.PARTIAL:
        # A partial upload waits, complete, for its final upload; anything else is a file now.
        return status_of(resumable=complete_upload(resumable=resumable))
    commit_progress(resumable=resumable, offset=end)
    return status_of(resumable=resumable)


def _receive(
    *,
    resumable: ResumableUpload,
    handle: BinaryIO,
    body: ClientStream,
    content_length: int | None,
    checksum: Checksum | None,
    room: int,
) -> int:
    """Write the body to `handle`; returns the bytes received, or raises with the uncommitted tail cut off."""
    start = resumable.offset
    hasher: Any = checksum.new_hasher() if checksum else None
    sniffer = _Sniffer(resumable=resumable, handle=handle, start=start)
    chunk_size = settings.FILE_UPLOAD_CHUNK_SIZE
    checkpoint = settings.FILE_UPLOAD_RESUMABLE_CHECKPOINT_BYTES
    received = 0
    since_commit = 0
    while content_length is None or received < content_length:
        want = chunk_size if content_length is None else min(chunk_size, content_length - received)
        try:
            data = body.read(want)
        except ClientGone as exc:
            _keep_what_arrived(resumable=resumable, handle=handle, end=start + received, checksum=checksum)
            raise UploadRejected("incomplete_body", f"The request body ended early: {exc}") from None
        if not data:  # the end of a chunked body (one cut short of its Content-Length raised ClientGone)
            break
        if received + len(data) > room:  # a chunked body longer than the upload: nothing past it is written
            cut_back(handle=handle, offset=resumable.offset)
            raise _past_length(start + room) if resumable.length is not None else too_large()
        try:
            sniffer.feed(data, at_end=resumable.length is not None and start + received + len(data) == resumable.length)
        except UploadRejected:
            handle.close()
            discard_upload(upload=resumable.file)
            raise
        handle.write(data)
        received += len(data)
        if hasher is not None:
            hasher.update(data)
        else:
            since_commit += len(data)
            if since_commit >= checkpoint:
                # A long body commits its progress on the way: a crash loses at most one checkpoint's bytes.
                make_durable(handle=handle)
                commit_progress(resumable=resumable, offset=start + received)
                since_commit = 0
    sniffer.feed(b"", at_end=resumable.length is not None and start + received == resumable.length)
    if checksum is not None and not hmac.compare_digest(hasher.digest(), checksum.digest):
        cut_back(handle=handle, offset=start)
        raise UploadRejected(
            "chunk_checksum_mismatch",
            f"The body's {checksum.algorithm} differs from Upload-Checksum; the offset stays {start}.",
            status=CHECKSUM_MISMATCH_STATUS,
        )
    return received


def _keep_what_arrived(*, resumable: ResumableUpload, handle: BinaryIO, end: int, checksum: Checksum | None) -> None:
    # The client went away: the bytes that arrived are kept and counted, unless a checksum was promised for the
    # whole body, which can no longer be verified (no checkpoint is committed then, so this is the start).
    if checksum is not None:
        cut_back(handle=handle, offset=resumable.offset)
        return
    make_durable(handle=handle)
    commit_progress(resumable=resumable, offset=end)
