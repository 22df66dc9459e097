"""concatenation: a final upload assembled from the owner's finished partial uploads (tus-js-client parallelUploads)."""

from __future__ import annotations

import contextlib
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from portal.models import ResumableUpload
from portal.services.errors import UploadRejected
from portal.services.filenames import validate_display_filename
from portal.services.removal import staging_path
from portal.services.resumable.appending import locked
from portal.services.resumable.completion import complete_upload
from portal.services.resumable.creation import insert_rows, start_staging, too_large
from portal.services.resumable.locking import upload_lock
from portal.services.resumable.protocol import Concat, UploadMetadata
from portal.services.resumable.staging_files import append_file, make_durable
from portal.services.resumable.state import find_owned_upload, require_unexpired
from portal.services.staged_uploads import discard_upload, storage_failed


def create_final_upload(
    *, owner: User, concat: Concat, metadata: UploadMetadata, now: datetime | None = None
) -> ResumableUpload:
    """Assemble the partial uploads, in order, into one new upload and store it; the partial uploads are removed.

    Every partial upload must be the owner's, finished, and not busy (423); 413 if the sum passes the limit.
    """
    now = now or timezone.now()
    if metadata.filename is None:
        raise UploadRejected("filename_empty", "Send the file name as Upload-Metadata `filename`.")
    filename = validate_display_filename(raw=metadata.filename)
    with contextlib.ExitStack() as locks:
        partials = []
        for partial_id in concat.partial_ids:
            try:
                partial = find_owned_upload(owner=owner, upload_id=partial_id)
            except UploadRejected:
                raise UploadRejected("unknown_partial_upload", f"No partial upload {partial_id} of yours.") from None
            if not locks.enter_context(upload_lock(upload_id=partial.file_id)):
                raise locked()
            partial = find_owned_upload(owner=owner, upload_id=partial_id)  # committed state, under the lock
            require_unexpired(resumable=partial, now=now)
            if partial.concat != ResumableUpload.Concat.PARTIAL or partial.offset != partial.length:
                raise UploadRejected(
                    "partial_upload_incomplete", f"Upload {partial_id} is not a finished partial upload."
                )
            partials.append(partial)
        total = sum(p.length or 0 for p in partials)
        if total > settings.FILE_UPLOAD_MAX_SIZE:
            raise too_large()
        # No quota here: the final upload replaces partial uploads that were counted already.
        final = insert_rows(owner=owner, filename=filename, length=total, metadata=metadata, concat=concat, now=now)
        start_staging(resumable=final)
        _assemble(final=final, partials=partials)
        complete_upload(resumable=final, now=now)
        for partial in partials:
            discard_upload(upload=partial.file)
    return final


def _assemble(*, final: ResumableUpload, partials: list[ResumableUpload]) -> None:
    try:
        with open(staging_path(upload_id=final.file_id), "r+b") as handle:
            for partial in partials:
                append_file(handle=handle, upload_id=partial.file_id, length=partial.length or 0)
            make_durable(handle=handle)
    except OSError as exc:
        discard_upload(upload=final.file)
        raise storage_failed(exc, upload=final.file, step="concatenation") from exc
