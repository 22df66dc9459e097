"""The portal's configuration: TTL bounds, where uploads are staged and stored, and the lifecycle schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from common.app_conf import add_beat_entries, route_tasks

TASK_QUEUES = {
    "portal.tasks.cleanup_expired_upload_files_task": "default",
    "portal.tasks.notify_expiring_files_task": "default",
}


def configure(config: Any) -> None:
    """Refuse impossible TTLs and cleanup intervals; define the upload storages; add the lifecycle beat entries."""
    if not 1 <= config.CLEANUP_UPLOADS_INTERVAL_HOURS <= 24:
        raise ImproperlyConfigured("CLEANUP_UPLOADS_INTERVAL_HOURS must be between 1 and 24")
    if config.FILE_UPLOAD_TTL_HOURS > config.FILE_UPLOAD_MAX_TTL_HOURS:
        raise ImproperlyConfigured("FILE_UPLOAD_TTL_HOURS must not exceed FILE_UPLOAD_MAX_TTL_HOURS")
    notify_every = config.FILE_UPLOAD_EXPIRY_NOTIFY_INTERVAL_MINUTES
    if not (1 <= notify_every <= 60 and 60 % notify_every == 0):
        raise ImproperlyConfigured(
            f"FILE_UPLOAD_EXPIRY_NOTIFY_INTERVAL_MINUTES: a divisor of 60 (e.g. 15, 30, 60), got {notify_every}"
        )
    media_root = Path(config.MEDIA_ROOT)
    if not config.FILE_UPLOAD_STAGING_DIR:
        config.FILE_UPLOAD_STAGING_DIR = str(media_root / "incoming")
    config.STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        # No base_url: nothing links to these files directly.
        "uploads": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(media_root / "uploads"), "base_url": None},
        },
    }
    route_tasks(config, queues=TASK_QUEUES)
    add_beat_entries(
        config,
        entries={
            # crontab, not an interval: runs land on 00/06/12/18 UTC whenever beat restarts.
            "cleanup-expired-upload-files": {
                "task": "portal.tasks.cleanup_expired_upload_files_task",
                "schedule": crontab(minute="0", hour=f"*/{config.CLEANUP_UPLOADS_INTERVAL_HOURS}"),
            },
            # crontab(minute=0) by default: on the hour, whenever beat restarts.
            "notify-expiring-files": {
                "task": "portal.tasks.notify_expiring_files_task",
                "schedule": crontab(minute="0" if notify_every == 60 else f"*/{notify_every}"),
            },
        },
    )
