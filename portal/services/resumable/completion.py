"""Finishing a tus upload whose last byte arrived: through the same finish step as a single-request upload."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from portal.models import ResumableUpload
from portal.services.errors import UploadRejected
from portal.services.staged_uploads import discard_upload, measure_staged_file, storage_failed, store_staged_upload


def complete_upload(*, resumable: ResumableUpload, now: datetime | None = None) -> ResumableUpload:
    """Hash the staged bytes and store them (stored + file.stored atomically); on any refusal nothing is kept.

    The caller holds the upload's lock and has fsynced the staging file. The offset in the database stays where
    it was until the row is `stored`: a crash before that leaves an upload that resumes from its last commit.
    """
    now = now or timezone.now()
    upload = resumable.file
    try:
        try:
            content = measure_staged_file(upload_id=upload.id)
        except OSError as exc:
            raise storage_failed(exc, upload=upload, step="hashing") from exc
        if content.size != resumable.length:
            raise UploadRejected("upload_lost", "The upload's bytes were lost on the server; start again.", status=410)
        # A resumable upload may take days: its lifetime starts when it is stored, not when it began.
        resumable.file = store_staged_upload(
            upload=upload,
            content=content,
            client_sha256=resumable.client_sha256 or None,
            expires_at=now + timedelta(hours=resumable.ttl_hours),
        )
    except BaseException:
        discard_upload(upload=upload)
        raise
    return resumable
