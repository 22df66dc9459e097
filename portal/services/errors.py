"""The rejection every portal service raises for bad input: a stable code and an HTTP status."""

from __future__ import annotations


class UploadRejected(Exception):
    """Bad input; `code` is stable API, `message` is for humans."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
