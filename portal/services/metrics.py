"""The portal's Prometheus source: uploads by state and their bytes, read from PostgreSQL at scrape time."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Q, Sum

from common.monitoring.services.metrics import Metric, gauge
from portal.models import UploadFile


def upload_metrics(*, now: datetime) -> list[Metric]:
    """Uploads stored, unfinished, expired awaiting cleanup and failed, with their bytes (1 query)."""
    status = UploadFile.Status
    states = {
        "stored": Q(status=status.STORED, expires_at__gt=now),
        "unfinished": Q(status=status.UPLOADING),
        # Past their TTL (marked or not yet) or deleted: no longer served, their bytes wait for cleanup.
        "expired_awaiting_cleanup": Q(status=status.EXPIRED) | Q(status=status.STORED, expires_at__lte=now),
        "failed": Q(status=status.FAILED),
    }
    summary = UploadFile.objects.aggregate(
        **{f"{state}_count": Count("id", filter=q) for state, q in states.items()},
        **{f"{state}_bytes": Sum("size_bytes", filter=q) for state, q in states.items()},
    )
    uploads = gauge("uploads", "Uploaded files by state.", ["state"])
    size = gauge("upload_bytes", "Bytes of the uploaded files by state (unfinished: 0 until finished).", ["state"])
    for state in states:
        uploads.add_metric([state], summary[f"{state}_count"])
        size.add_metric([state], summary[f"{state}_bytes"] or 0)
    return [uploads, size]
