"""Which files a user may see, and the open bytes of one for download; never another user's, never expired ones."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import IO

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.utils import timezone

from portal.models import UploadFile
from portal.services.errors import StorageFailed, StorageUnavailable, UploadRejected
from portal.services.removal import upload_storage

logger = logging.getLogger(__name__)


def owned_uploads(*, owner: User) -> QuerySet[UploadFile]:
    """The owner's stored and expired-but-not-yet-cleaned files, newest first."""
    return UploadFile.objects.filter(
        owner=owner, status__in=[UploadFile.Status.STORED, UploadFile.Status.EXPIRED], deleted_at__isnull=True
    ).order_by("-created_at", "id")


def get_owned_upload(*, owner: User, file_id: uuid.UUID | str) -> UploadFile:
    """The owner's file; raises not_found (404) for a missing or malformed id, or another user's file."""
    try:
        file_id = file_id if isinstance(file_id, uuid.UUID) else uuid.UUID(file_id)
    except ValueError:
        raise UploadRejected("not_found", "No such file.", status=404) from None
    upload = owned_uploads(owner=owner).filter(pk=file_id).first()
    if upload is None:
        raise UploadRejected("not_found", "No such file.", status=404)
    return upload


def is_expired(*, upload: UploadFile, now: datetime | None = None) -> bool:
    """Whether the file may no longer be served: past expires_at or marked expired, cleanup or not."""
    return upload.status != UploadFile.Status.STORED or upload.expires_at <= (now or timezone.now())


def open_for_download(
    *, owner: User, file_id: uuid.UUID | str, now: datetime | None = None
) -> tuple[UploadFile, IO[bytes]]:
    """(upload, open binary file) for a live file of the owner; 404 if not theirs, 410 once expired."""
    upload = get_owned_upload(owner=owner, file_id=file_id)
    if is_expired(upload=upload, now=now):
        raise UploadRejected("file_expired", "The file has expired.", status=410)
    try:
        handle: IO[bytes] = upload_storage().open(upload.storage_name, "rb")
    except FileNotFoundError:
        # Cleanup removed the bytes between our check and the open.
        raise UploadRejected("file_expired", "The file has expired.", status=410) from None
    except StorageUnavailable as exc:  # 503, the client may retry
        logger.exception(
            "upload %s: opening for download failed: %s",
            upload.id,
            exc,
            extra={"event": "portal.download_storage_failed", "upload_id": str(upload.id)},
        )
        raise StorageFailed(exc) from exc
    return upload, handle
