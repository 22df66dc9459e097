"""Where stored files live: the local disk (FileSystemStorage) or an S3-compatible bucket (S3UploadStorage).

Uploads always stream to local staging first (FILE_UPLOAD_STAGING_DIR); finishing hands the staged file to the
storage. For S3 that is a multipart upload read from the staged file's path in FILE_STORAGE_S3_PART_SIZE parts,
so memory stays bounded by part size x concurrency whatever the file's size, and the object appears only when the
last part is committed: a failure midway leaves no object. Every S3 or network failure surfaces as
StorageUnavailable (an OSError), so the callers' existing error handling (StorageFailed, recorded cleanup
failures) covers it; a missing object opens as FileNotFoundError and deletes as a success.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

from portal.services.errors import StorageUnavailable

# What boto3 raises for an unreachable endpoint, a refused request or a failed transfer.
_S3_ERRORS = (BotoCoreError, ClientError, Boto3Error)
_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3UploadStorage(S3Storage):
    """django-storages' S3 backend with bounded-memory multipart uploads from staged files and streamed reads."""

    def __init__(
        self,
        *,
        part_size: int,
        concurrency: int,
        max_attempts: int,
        timeout: float,
        addressing_style: str | None = None,
        **options: Any,
    ) -> None:
        """Configure transfers (part size, parallel parts) and the client (retries, timeouts, addressing)."""
        super().__init__(
            transfer_config=TransferConfig(
                multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=concurrency
            ),
            client_config=Config(
                s3={"addressing_style": addressing_style or "auto"},
                retries={"max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=timeout,
                read_timeout=timeout,
            ),
            **options,
        )

    def _save(self, name: str, content: Any) -> str:
        """Move a staged file into the bucket (parts read from disk as sent; the local copy removed once committed).

        Like FileSystemStorage, which renames a file that has a temporary_file_path: the staged copy is gone
        after a successful save, and untouched after a failed one (the caller abandons the upload).
        """
        try:
            path = content.temporary_file_path()
        except AttributeError:
            path = None
        if path is None:
            try:
                return super()._save(name, content)
            except _S3_ERRORS as exc:
                raise StorageUnavailable(f"storing {name} in bucket {self.bucket_name}: {exc}") from exc
        try:
            cleaned = clean_name(name)
            key = self._normalize_name(cleaned)
            params = self._get_write_parameters(key, content)
            self.bucket.Object(key).upload_file(path, ExtraArgs=params, Config=self.transfer_config)
        except _S3_ERRORS as exc:
            raise StorageUnavailable(f"storing {name} in bucket {self.bucket_name}: {exc}") from exc
        Path(path).unlink(missing_ok=True)
        return cleaned

    def _open(self, name: str, mode: str = "rb") -> IO[bytes]:
        """The object's body as a stream: nothing is downloaded ahead of the reader (no temporary copy)."""
        key = self._normalize_name(clean_name(name))
        try:
            return self.bucket.Object(key).get()["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise FileNotFoundError(f"no object {key} in bucket {self.bucket_name}") from exc
            raise StorageUnavailable(f"reading {name} from bucket {self.bucket_name}: {exc}") from exc
        except _S3_ERRORS as exc:
            raise StorageUnavailable(f"reading {name} from bucket {self.bucket_name}: {exc}") from exc

    def delete(self, name: str) -> None:
        """Delete the object; a missing one counts as deleted (S3 answers 204 for it too)."""
        try:
            super().delete(name)
        except _S3_ERRORS as exc:
            raise StorageUnavailable(f"deleting {name} from bucket {self.bucket_name}: {exc}") from exc
