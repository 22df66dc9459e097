"""The TTL lifecycle: file.expiring notices exactly once, and cleanup of expired and stuck uploads."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from portal.models import UploadFile
from portal.services.events import emit_file_event
from portal.services.removal import delete_upload_bytes, finish_removed_upload, record_removal_failure

logger = logging.getLogger(__name__)


def _cleanup_candidates(*, now: datetime) -> Q:
    stuck_since = now - timedelta(hours=settings.FILE_UPLOAD_UPLOADING_GRACE_HOURS)
    return (
        Q(status=UploadFile.Status.STORED, expires_at__lte=now)
        # Marked by a run (or a delete) that did not get to finish.
        | Q(status=UploadFile.Status.EXPIRED)
        | Q(status=UploadFile.Status.FAILED, created_at__lte=stuck_since)
        # A single-request upload streams in one request: stuck once the grace period has passed.
        | Q(status=UploadFile.Status.UPLOADING, resumable__isnull=True, created_at__lte=stuck_since)
        # A tus upload may rightly take days: it expires FILE_UPLOAD_RESUMABLE_EXPIRY_HOURS after its last PATCH.
        | Q(status__in=[UploadFile.Status.UPLOADING, UploadFile.Status.FAILED], resumable__expires_at__lte=now)
    )


def cleanup_expired_uploads(*, now: datetime | None = None, limit: int | None = None) -> dict:
    """Remove up to `limit` expired or stuck uploads: mark, delete bytes, finish + event; {"deleted", "remaining"}."""
    now = now or timezone.now()
    limit = limit or settings.CLEANUP_UPLOADS_BATCH_SIZE
    with transaction.atomic():
        # skip_locked: a concurrent run (or a request finishing an upload) keeps what it holds.
        batch = list(
            # of=("self",): the join to the tus state is nullable, and only the upload row is claimed.
            UploadFile.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(_cleanup_candidates(now=now))
            # Rows whose removal failed go last, least recently failed first: one file that cannot be
            # deleted never starves the others, and is still retried by every run that has room.
            .order_by(F("cleanup_failed_at").asc(nulls_first=True), "expires_at")[:limit]
        )
        # Step 1, committed before any byte goes: the rows are no longer served.
        stored = [u.pk for u in batch if u.status == UploadFile.Status.STORED]
        UploadFile.objects.filter(pk__in=stored).update(status=UploadFile.Status.EXPIRED)
        in_flight = [u.pk for u in batch if u.status == UploadFile.Status.UPLOADING]
        UploadFile.objects.filter(pk__in=in_flight).update(status=UploadFile.Status.FAILED)
    deleted = failed = 0
    for upload in batch:
        try:
            delete_upload_bytes(upload=upload)  # step 2: tolerant of bytes already gone
            # Step 3: row gone + event, atomically; a concurrent run that got there first counts it instead.
            deleted += finish_removed_upload(upload_id=upload.id)
        except Exception as exc:  # this row only: it stays marked (never served) and is retried later
            record_removal_failure(upload=upload, exc=exc, now=now)
            failed += 1
    remaining = UploadFile.objects.filter(_cleanup_candidates(now=now)).count()
    if failed:
        logger.warning(
            "upload cleanup: %d removed, %d failed (retried by later runs), %d remaining",
            deleted,
            failed,
            remaining,
            extra={"event": "portal.cleanup_failures", "deleted": deleted, "failed": failed, "remaining": remaining},
        )
    return {"deleted": deleted, "remaining": remaining}


def notify_expiring_files(*, now: datetime | None = None, limit: int | None = None) -> dict:
    """Emit file.expiring exactly once per stored file near expiry; {"notified", "skipped"}."""
    now = now or timezone.now()
    limit = limit or settings.CLEANUP_UPLOADS_BATCH_SIZE
    window_end = now + timedelta(hours=settings.FILE_UPLOAD_EXPIRY_NOTIFY_HOURS)
    # No lower bound: a file already past the window start (short TTL, a late run) still gets its one notice.
    due = Q(status=UploadFile.Status.STORED, expiry_notified_at__isnull=True, expires_at__lte=window_end)
    seen = UploadFile.objects.filter(due).count()
    notified = 0
    while True:
        with transaction.atomic():
            batch = list(
                UploadFile.objects.select_for_update(skip_locked=True).filter(due).order_by("expires_at")[:limit]
            )
            for upload in batch:
                emit_file_event(event_type="file.expiring", upload=upload)
            # The mark lives on the row, committed with the events: it outlives outbox retention.
            UploadFile.objects.filter(pk__in=[u.pk for u in batch]).update(expiry_notified_at=now)
        notified += len(batch)
        if len(batch) < limit:
            break
    # Due files this run did not notify: another run held them, or they changed state meanwhile.
    return {"notified": notified, "skipped": max(seen - notified, 0)}
