"""Removing an upload safely: mark the row (no longer served), delete the bytes, then finish the row.

Each step is idempotent, so a crash after any of them leaves a state the next cleanup run completes.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.core.files.storage import storages
from django.db import transaction
from django.utils import timezone

from portal.models import UploadFile
from portal.services.events import emit_file_event


def upload_storage():
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


def delete_upload(*, upload: UploadFile, now: datetime | None = None) -> None:
    """Delete an owner's file: no longer served at once, bytes removed, file.deleted emitted exactly once."""
    now = now or timezone.now()
    UploadFile.objects.filter(pk=upload.pk, status=UploadFile.Status.STORED).update(
        status=UploadFile.Status.EXPIRED, deleted_at=now
    )
    delete_upload_bytes(upload=upload)
    finish_removed_upload(upload_id=upload.id)
