"""Creating a tus upload (creation, creation-defer-length, concatenation's partial uploads), within the quota."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from portal.models import ResumableUpload, UploadFile
from portal.services.errors import UploadRejected
from portal.services.filenames import validate_display_filename
from portal.services.resumable.protocol import Concat, UploadMetadata
from portal.services.resumable.staging_files import create_staging_file
from portal.services.resumable.state import expiry_from
from portal.services.staged_uploads import begin_upload, discard_upload, storage_failed

# The display name of a partial upload, which is never a file by itself.
PARTIAL_NAME = "partial"


def too_large() -> UploadRejected:
    """413 file_too_large, with the limit."""
    return UploadRejected("file_too_large", f"The file exceeds {settings.FILE_UPLOAD_MAX_SIZE} bytes.", status=413)


def check_length(*, length: int | None, defer_length: bool, partial: bool) -> None:
    """Exactly one of Upload-Length / Upload-Defer-Length: 1; 413 over FILE_UPLOAD_MAX_SIZE; no empty file."""
    if length is None and not defer_length:
        raise UploadRejected("missing_upload_length", "Send Upload-Length, or Upload-Defer-Length: 1.")
    if length is not None and defer_length:
        raise UploadRejected("invalid_upload_length", "Send either Upload-Length or Upload-Defer-Length, not both.")
    if length is not None and length > settings.FILE_UPLOAD_MAX_SIZE:
        raise too_large()
    if length == 0 and not partial:
        raise UploadRejected("empty_file", "The file is empty.")


def active_uploads(*, owner: User, now: datetime) -> int:
    """How many unfinished, unexpired tus uploads (partial ones included) `owner` has."""
    return UploadFile.objects.filter(
        owner=owner, status=UploadFile.Status.UPLOADING, resumable__expires_at__gt=now
    ).count()


def insert_rows(
    *,
    owner: User,
    filename: str,
    length: int | None,
    metadata: UploadMetadata,
    concat: Concat,
    now: datetime,
) -> ResumableUpload:
    """Insert the upload's rows (`uploading`), in the caller's transaction if there is one."""
    with transaction.atomic():
        upload = begin_upload(owner=owner, original_filename=filename, now=now)
        return ResumableUpload.objects.create(
            file=upload,
            length=length,
            concat=concat.kind,
            concat_header=concat.raw if concat.kind == ResumableUpload.Concat.FINAL else "",
            metadata=metadata.raw,
            ttl_hours=metadata.ttl_hours,
            client_sha256=metadata.client_sha256 or "",
            expires_at=expiry_from(moment=now),
        )


def start_staging(*, resumable: ResumableUpload) -> None:
    """Create the committed upload's staging file; on a storage failure remove the upload and raise 507/500."""
    try:
        create_staging_file(upload_id=resumable.file_id)
    except OSError as exc:
        discard_upload(upload=resumable.file)
        raise storage_failed(exc, upload=resumable.file, step="staging") from exc


def create_upload(
    *,
    owner: User,
    length: int | None,
    defer_length: bool,
    metadata: UploadMetadata,
    concat: Concat,
    now: datetime | None = None,
) -> ResumableUpload:
    """POST: a new unfinished (or partial) upload; 429 once the owner has FILE_UPLOAD_MAX_ACTIVE_UPLOADS open."""
    now = now or timezone.now()
    partial = concat.kind == ResumableUpload.Concat.PARTIAL
    check_length(length=length, defer_length=defer_length, partial=partial)
    if partial:
        filename = PARTIAL_NAME
    elif metadata.filename is None:
        raise UploadRejected("filename_empty", "Send the file name as Upload-Metadata `filename`.")
    else:
        filename = validate_display_filename(raw=metadata.filename)
    with transaction.atomic():
        # The owner's row serialises their concurrent creations, so the quota cannot be overrun by a race.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        limit = settings.FILE_UPLOAD_MAX_ACTIVE_UPLOADS
        if active_uploads(owner=owner, now=now) >= limit:
            raise UploadRejected(
                "too_many_active_uploads",
                f"You have {limit} unfinished uploads, the most allowed; finish or delete one (DELETE its URL) first.",
                status=429,
            )
        resumable = insert_rows(
            owner=owner, filename=filename, length=length, metadata=metadata, concat=concat, now=now
        )
    start_staging(resumable=resumable)
    return resumable
