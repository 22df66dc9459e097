"""The staging file of a tus upload: created durably, reopened at its committed offset, appended to."""

from __future__ import annotations

import os
import uuid
from typing import BinaryIO

from portal.services.removal import staging_path

# Bytes per copy step when assembling a final upload: bounds memory on the fallback path.
COPY_STEP = 8 * 1024 * 1024


def _fsync_directory(path: os.PathLike | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_staging_file(*, upload_id: uuid.UUID) -> None:
    """Create the empty staging file of a new upload, its directory entry fsynced (survives a power cut)."""
    path = staging_path(upload_id=upload_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    _fsync_directory(path.parent)


def open_at_offset(*, upload_id: uuid.UUID, offset: int) -> BinaryIO | None:
    """The staging file opened for writing at `offset`, anything past it cut off; None if it holds fewer bytes.

    Bytes past the committed offset are what a crashed or refused request left: never counted, so dropped.
    """
    handle = open(staging_path(upload_id=upload_id), "r+b")  # noqa: SIM115 - the caller closes it
    size = os.fstat(handle.fileno()).st_size
    if size < offset:
        handle.close()
        return None
    if size > offset:
        handle.truncate(offset)
    handle.seek(offset)
    return handle


def make_durable(*, handle: BinaryIO) -> None:
    """Flush and fsync: after this, every byte written so far survives a crash."""
    handle.flush()
    os.fsync(handle.fileno())


def cut_back(*, handle: BinaryIO, offset: int) -> None:
    """Drop what this request wrote past `offset` (not counted, so never resumed from)."""
    handle.flush()
    handle.truncate(offset)
    handle.seek(offset)


def append_file(*, handle: BinaryIO, upload_id: uuid.UUID, length: int) -> None:
    """Append the first `length` bytes of another upload's staging file, copied by the kernel where it can."""
    handle.flush()
    out = handle.fileno()
    start = os.fstat(out).st_size
    with open(staging_path(upload_id=upload_id), "rb") as source:
        src = source.fileno()
        copied = 0
        while copied < length:
            want = min(COPY_STEP, length - copied)
            try:
                n = os.copy_file_range(src, out, want, copied, start + copied)
            except OSError:  # a file system without it: a plain read and write of one step
                n = os.pwrite(out, os.pread(src, want, copied), start + copied)
            if n == 0:
                raise OSError(f"staging file of {upload_id} ended at {copied} of {length} bytes")
            copied += n
    handle.seek(0, os.SEEK_END)
