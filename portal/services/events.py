"""The outbox events of an upload; payloads carry metadata only: no bytes, no secrets, no URLs."""

from __future__ import annotations

from common.outbox.models import OutboxEvent
from common.outbox.services.emit import emit_event
from portal.models import UploadFile

AGGREGATE_TYPE = "portal.upload_file"


def file_event_payload(*, upload: UploadFile) -> dict:
    """The payload every file.* event carries."""
    return {
        "id": str(upload.id),
        "name": upload.original_filename,
        "type": upload.content_type,
        "size": upload.size_bytes,
        "sha256": upload.sha256,
        "expires_at": upload.expires_at.isoformat(),
    }


def emit_file_event(*, event_type: str, upload: UploadFile) -> OutboxEvent:
    """Write `event_type` for `upload` into the caller's transaction, at most once per file and type."""
    return emit_event(
        event_type=event_type,
        aggregate_type=AGGREGATE_TYPE,
        aggregate_id=str(upload.id),
        payload=file_event_payload(upload=upload),
        # Deterministic: a retry or a concurrent run gets the existing event back.
        idempotency_key=str(upload.id),
    )
