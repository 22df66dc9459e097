"""The portal's configuration: TTL bounds, where uploads are staged and stored, and the lifecycle schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from common.app_conf import add_beat_entries, require_at_least, route_tasks

# S3's smallest allowed part of a multipart upload (all but the last part).
S3_MIN_PART_SIZE = 5 * 1024 * 1024

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
        "staticfiles": {"BACKEND": config.STATICFILES_BACKEND},
        "uploads": _uploads_storage(config, media_root=media_root),
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


def _uploads_storage(config: Any, *, media_root: Path) -> dict[str, Any]:
    """The STORAGES entry for stored files: the local disk, or the S3 bucket after checking its settings."""
    if config.FILE_STORAGE_BACKEND == "local":
        # No base_url: nothing links to these files directly.
        return {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(media_root / "uploads"), "base_url": None},
        }
    if config.FILE_STORAGE_BACKEND != "s3":
        raise ImproperlyConfigured(f'FILE_STORAGE_BACKEND: "local" or "s3", got {config.FILE_STORAGE_BACKEND!r}')
    if not config.FILE_STORAGE_S3_BUCKET:
        raise ImproperlyConfigured("FILE_STORAGE_S3_BUCKET must be set when FILE_STORAGE_BACKEND=s3")
    style = config.FILE_STORAGE_S3_ADDRESSING_STYLE
    if style not in ("auto", "path", "virtual"):
        raise ImproperlyConfigured(f'FILE_STORAGE_S3_ADDRESSING_STYLE: "auto", "path" or "virtual", got {style!r}')
    require_at_least(config, names=("FILE_STORAGE_S3_PART_SIZE",), minimum=S3_MIN_PART_SIZE)
    require_at_least(config, names=("FILE_STORAGE_S3_CONCURRENCY", "FILE_STORAGE_S3_MAX_ATTEMPTS"), minimum=1)
    if not 0 < config.FILE_STORAGE_S3_TIMEOUT < float("inf"):  # also refuses nan
        raise ImproperlyConfigured(f"FILE_STORAGE_S3_TIMEOUT: seconds > 0, got {config.FILE_STORAGE_S3_TIMEOUT}")
    return {
        "BACKEND": "portal.services.storage.S3UploadStorage",
        "OPTIONS": {
            "bucket_name": config.FILE_STORAGE_S3_BUCKET,
            "endpoint_url": config.FILE_STORAGE_S3_ENDPOINT_URL,
            "region_name": config.FILE_STORAGE_S3_REGION,
            "access_key": config.FILE_STORAGE_S3_ACCESS_KEY_ID,
            "secret_key": config.FILE_STORAGE_S3_SECRET_ACCESS_KEY,
            "location": config.FILE_STORAGE_S3_PREFIX.strip("/"),
            "addressing_style": style,
            "part_size": config.FILE_STORAGE_S3_PART_SIZE,
            "concurrency": config.FILE_STORAGE_S3_CONCURRENCY,
            "max_attempts": config.FILE_STORAGE_S3_MAX_ATTEMPTS,
            "timeout": config.FILE_STORAGE_S3_TIMEOUT,
            # Names are server-generated and never clash; the bucket stays private (no ACL, no public URLs).
            "file_overwrite": True,
            "default_acl": None,
        },
    }
