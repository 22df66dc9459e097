"""termination: DELETE removes an upload and its bytes, finished or not."""

from __future__ import annotations

from django.contrib.auth.models import User

from portal.models import UploadFile
from portal.services.removal import delete_upload
from portal.services.resumable.appending import locked
from portal.services.resumable.locking import upload_lock
from portal.services.resumable.state import find_owned_upload, parse_upload_id
from portal.services.staged_uploads import discard_upload


def terminate_upload(*, owner: User, upload_id: str) -> None:
    """Remove the owner's upload: unfinished ones without an event, a stored file as a delete (file.deleted).

    423 while a PATCH is writing to it; 404 if it is not the owner's.
    """
    with upload_lock(upload_id=parse_upload_id(raw=upload_id)) as held:
        # Looked up under the lock: a PATCH may have stored it just before.
        resumable = find_owned_upload(owner=owner, upload_id=upload_id)
        if not held:
            raise locked()
        if resumable.file.status == UploadFile.Status.STORED:
            delete_upload(upload=resumable.file)
        else:
            # Never announced, so no event; a removal that fails is logged and finished by cleanup.
            discard_upload(upload=resumable.file)
