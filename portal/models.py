"""Models of the portal: uploaded files with a TTL, and the API tokens that upload them."""

import uuid

from django.conf import settings
from django.db import models


class UploadFile(models.Model):
    class Status(models.TextChoices):
        UPLOADING = "uploading"
        STORED = "stored"
        FAILED = "failed"  # rejected or aborted: its bytes are being removed, it was never served
        EXPIRED = "expired"  # past its TTL or deleted: no longer served, cleanup removes bytes and row

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="upload_files")
    # Display only: the stored name is generated from the id, never from what the client sent.
    original_filename = models.TextField()
    storage_name = models.CharField(max_length=255, unique=True, editable=False)
    content_type = models.CharField(max_length=127, blank=True, default="")
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UPLOADING)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    # Set in the same transaction as the file.expiring event: the record of "notified" that
    # outlives the outbox's retention.
    expiry_notified_at = models.DateTimeField(null=True, blank=True)
    # Set when the owner deletes the file, so a cleanup that finishes the job emits file.deleted.
    deleted_at = models.DateTimeField(null=True, blank=True)
    # The last time removing its bytes failed (and why): cleanup retries it after files that never failed.
    cleanup_failed_at = models.DateTimeField(null=True, blank=True)
    cleanup_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="portal_upload_owner_created"),
            models.Index(fields=["status", "expires_at"], name="portal_upload_status_expires"),
        ]

    def __str__(self) -> str:
        return f"{self.original_filename} ({self.id})"


class ResumableUpload(models.Model):
    """The tus (resumable) state of an upload; its UploadFile stays `uploading` until the last byte is stored."""

    class Concat(models.TextChoices):
        NONE = ""
        PARTIAL = "partial"  # one piece of a parallel upload: never a file by itself
        FINAL = "final"  # assembled from partial uploads when created

    file = models.OneToOneField(UploadFile, primary_key=True, on_delete=models.CASCADE, related_name="resumable")
    # Bytes durably in the staging file (fsynced before this was committed): HEAD never reports more.
    offset = models.BigIntegerField(default=0)
    # Null until a deferred length is declared (creation-defer-length).
    length = models.BigIntegerField(null=True, blank=True)
    concat = models.CharField(max_length=8, choices=Concat.choices, blank=True, default=Concat.NONE)
    # The Upload-Concat header of a final upload, answered as sent by HEAD.
    concat_header = models.TextField(blank=True, default="")
    # The client's Upload-Metadata header, answered as sent by HEAD.
    metadata = models.TextField(blank=True, default="")
    ttl_hours = models.PositiveIntegerField()
    client_sha256 = models.CharField(max_length=64, blank=True, default="")
    # FILE_UPLOAD_RESUMABLE_EXPIRY_HOURS after the last PATCH: then cleanup removes the unfinished upload.
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="portal_resumable_expires")]

    def __str__(self) -> str:
        return f"{self.file_id} at {self.offset}/{self.length}"


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    # The first characters of the token, for recognising it in lists; not enough to use it.
    prefix = models.CharField(max_length=16, editable=False)
    # SHA-256 of the whole token: tokens are 256-bit random, so a fast hash cannot be brute-forced.
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
