"""Removing an upload safely: mark the row (no longer served), delete the bytes, then finish the row.

Each step is idempotent, so a crash after any of them leaves a state the next cleanup run completes.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import uuid
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.core.files.storage import Storage, storages
from django.db import transaction
from django.utils import timezone

from portal.models import UploadFile
from portal.services.events import emit_file_event

logger = logging.getLogger(__name__)


class Removal(enum.StrEnum):
    """What a delete did."""

    DELETED = "deleted"  # bytes and row gone (or a concurrent cleanup is finishing them right now)
    PENDING = "pending"  # no longer served, but removing its bytes failed: logged, and cleanup retries it
    SKIPPED = "skipped"  # still uploading (or a failed upload being removed): not the owner's to delete


def upload_storage() -> Storage:
    """The storage uploads live in (STORAGES["uploads"])."""
    return storages["uploads"]


def staging_path(*, upload_id: uuid.UUID) -> Path:
    """Where the bytes of an upload sit while they stream in."""
    return Path(settings.FILE_UPLOAD_STAGING_DIR) / f"{upload_id.hex}.part"


def delete_upload_bytes(*, upload: UploadFile) -> None:
    """Delete the stored and staged bytes of `upload`; bytes already gone are fine."""
    with contextlib.suppress(FileNotFoundError):
        staging_path(upload_id=upload.id).unlink()
    # FileSystemStorage.delete tolerates a missing file; other backends (S3) treat it as a no-op too.
    upload_storage().delete(upload.storage_name)


def finish_removed_upload(*, upload_id: uuid.UUID) -> bool:
    """Delete the row of a marked upload and emit its last event in one transaction; False if nothing to do."""
    with transaction.atomic():
        upload = (
            UploadFile.objects.select_for_update(skip_locked=True)
            .filter(pk=upload_id, status__in=[UploadFile.Status.EXPIRED, UploadFile.Status.FAILED])
            .first()
        )
        if upload is None:  # finished already, or another run holds it right now
            return False
        if upload.status == UploadFile.Status.EXPIRED:
            # An expired file that never got its notice gets it now, before file.expired: exactly once each.
            if upload.deleted_at is None and upload.expiry_notified_at is None:
                emit_file_event(event_type="file.expiring", upload=upload)
            event_type = "file.deleted" if upload.deleted_at else "file.expired"
            emit_file_event(event_type=event_type, upload=upload)
        upload.delete()
        return True


def record_removal_failure(*, upload: UploadFile, exc: BaseException, now: datetime) -> None:
    """Log why removing a marked upload failed and record it on the row, which stays marked (never served)."""
    logger.error(
        "upload %s: removal failed, cleanup retries it: %r",
        upload.id,
        exc,
        exc_info=exc,
        extra={"event": "portal.removal_failed", "upload_id": str(upload.id)},
    )
    UploadFile.objects.filter(pk=upload.pk).update(cleanup_failed_at=now, cleanup_error=repr(exc)[:1000])


def delete_upload(*, upload: UploadFile, now: datetime | None = None) -> Removal:
    """Delete a stored or expired file: unserved at once, bytes removed, one last event; says what happened."""
    now = now or timezone.now()
    UploadFile.objects.filter(pk=upload.pk, status=UploadFile.Status.STORED).update(
        status=UploadFile.Status.EXPIRED, deleted_at=now
    )
    status = UploadFile.objects.filter(pk=upload.pk).values_list("status", flat=True).first()
    if status is None:  # a cleanup run finished it already
        return Removal.DELETED
    if status != UploadFile.Status.EXPIRED:
        # Its request is still streaming it (or removing it): deleting the bytes under it would break that request.
        return Removal.SKIPPED
    try:
        delete_upload_bytes(upload=upload)
        finish_removed_upload(upload_id=upload.id)
    except Exception as exc:
        record_removal_failure(upload=upload, exc=exc, now=now)
        return Removal.PENDING
    return Removal.DELETED
