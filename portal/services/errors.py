"""The rejection every portal service raises for bad input: a stable code and an HTTP status."""

from __future__ import annotations

import errno


class UploadRejected(Exception):
    """Bad input; `code` is stable API, `message` is for humans."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


# The server ran out of room for the bytes (disk, quota, file size limit): 507, the client may retry later.
_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class StorageUnavailable(OSError):
    """The object storage (S3) could not be reached or refused the request; retrying later may work."""


class StorageFailed(UploadRejected):
    """The server could not write or move the bytes: 503 storage unreachable, 507 out of space, else 500."""

    def __init__(self, exc: OSError) -> None:
        if isinstance(exc, StorageUnavailable):
            super().__init__("storage_unavailable", "The file storage cannot be reached; try again later.", status=503)
        elif exc.errno in _OUT_OF_SPACE:
            super().__init__("storage_full", "The server has no room to store this file; try again later.", status=507)
        else:
            # The OS detail (paths, errno) stays in the server log, not in the response.
            super().__init__("storage_error", "The server could not store this file.", status=500)
