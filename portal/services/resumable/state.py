"""What the database says about a tus upload: finding the owner's upload, its status, and committing progress."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from portal.models import ResumableUpload, UploadFile
from portal.services.errors import UploadRejected


@dataclass(frozen=True)
class UploadStatus:
    """The protocol state of one upload, as HEAD, PATCH and POST answer it."""

    id: uuid.UUID
    offset: int
    length: int | None  # None: deferred, not declared yet
    metadata: str
    concat_header: str
    expires_at: datetime | None  # None once stored: a stored file no longer expires as an upload
    stored: bool


def not_found() -> UploadRejected:
    """The one answer for a missing, malformed, finished-and-deleted or another user's upload."""
    return UploadRejected("not_found", "No such upload.", status=404)


def expiry_from(*, moment: datetime) -> datetime:
    """When an unfinished upload last touched at `moment` expires."""
    return moment + timedelta(hours=settings.FILE_UPLOAD_RESUMABLE_EXPIRY_HOURS)


def parse_upload_id(*, raw: uuid.UUID | str) -> uuid.UUID:
    """The upload id in a URL; 404 if it is not a UUID."""
    try:
        return raw if isinstance(raw, uuid.UUID) else uuid.UUID(raw)
    except ValueError:
        raise not_found() from None


def find_owned_upload(*, owner: User, upload_id: uuid.UUID | str) -> ResumableUpload:
    """The owner's tus upload, unfinished or stored; 404 for anything else (never says whose it is)."""
    upload_id = parse_upload_id(raw=upload_id)
    resumable = (
        ResumableUpload.objects.select_related("file")
        .filter(
            pk=upload_id,
            file__owner=owner,
            file__status__in=[UploadFile.Status.UPLOADING, UploadFile.Status.STORED],
        )
        .first()
    )
    if resumable is None:
        raise not_found()
    return resumable


def require_unexpired(*, resumable: ResumableUpload, now: datetime | None = None) -> None:
    """410 upload_expired for an unfinished upload past its expiry (cleanup removes it soon)."""
    if resumable.file.status == UploadFile.Status.UPLOADING and resumable.expires_at <= (now or timezone.now()):
        raise UploadRejected("upload_expired", "The upload expired; start a new one.", status=410)


def status_of(*, resumable: ResumableUpload) -> UploadStatus:
    """The protocol state of `resumable`; a stored upload reports its whole length as its offset."""
    stored = resumable.file.status == UploadFile.Status.STORED
    return UploadStatus(
        id=resumable.file_id,
        offset=resumable.file.size_bytes if stored else resumable.offset,
        length=resumable.file.size_bytes if stored else resumable.length,
        metadata=resumable.metadata,
        concat_header=resumable.concat_header or resumable.concat,
        expires_at=None if stored else resumable.expires_at,
        stored=stored,
    )


def describe_upload(*, owner: User, upload_id: str, now: datetime | None = None) -> UploadStatus:
    """HEAD: the owner's upload state; 404 if not theirs, 410 once expired unfinished."""
    resumable = find_owned_upload(owner=owner, upload_id=upload_id)
    require_unexpired(resumable=resumable, now=now)
    return status_of(resumable=resumable)


def commit_progress(*, resumable: ResumableUpload, offset: int) -> None:
    """Record `offset` (bytes already fsynced) and push the expiry out; 410 if cleanup took the upload meanwhile."""
    now = timezone.now()
    updated = ResumableUpload.objects.filter(pk=resumable.pk, file__status=UploadFile.Status.UPLOADING).update(
        offset=offset, expires_at=expiry_from(moment=now)
    )
    if not updated:
        raise UploadRejected("upload_expired", "The upload expired and was removed; start a new one.", status=410)
    resumable.offset = offset
    resumable.expires_at = expiry_from(moment=now)
