"""Reading a multipart/form-data body part by part, with our own rules for each part's headers.

Django's MultiPartParser reads a part's headers with a fixed 1 KiB cap (a file name of about 950 characters made
the whole body "malformed") and skips a header line that is not UTF-8 without a word (a Latin-1 file name became
"no file part"). Its `handle_raw_input` hook lets the upload handler read the body instead; it does so here, on
Django's own boundary scanner, so a long or undecodable name gets its own error code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import QueryDict
from django.http.multipartparser import ChunkIter, InterBoundaryIter, LazyStream
from django.utils.datastructures import MultiValueDict
from django.utils.http import parse_header_parameters

from portal.services.errors import UploadRejected
from portal.services.filenames import filename_not_utf8
from portal.services.request_body import ByteSource

# RFC 7578 4.7: senders must not use Content-Transfer-Encoding; these values mean the bytes as they are.
_IDENTITY_ENCODINGS = {"", "7bit", "8bit", "binary"}


def part_headers_limit() -> int:
    """The most bytes a part's headers may take: a name at the limit fits even as 4-byte UTF-8, percent-encoded."""
    # RFC 2231 `filename*=UTF-8''%F0%9F%98%80…` spends 12 bytes on one 4-byte character; 2 KiB for the rest.
    return 12 * settings.FILE_UPLOAD_MAX_NAME_LENGTH + 2048


@dataclass(frozen=True)
class PartHeaders:
    """What the upload needs from a part's headers."""

    field_name: str
    filename: str  # "" for a form field
    content_type: str


def read_form(
    *, stream: ByteSource, boundary: bytes, chunk_size: int, handler: FileUploadHandler
) -> tuple[QueryDict, MultiValueDict[str, UploadedFile]]:
    """The form fields, and the files `handler` completed; file bytes go to it as they arrive, nothing is buffered.

    Reads the body to its end, so a stream that checks the length it was promised can tell a short one.
    """
    fields = QueryDict(mutable=True)
    files: MultiValueDict[str, UploadedFile] = MultiValueDict()
    body = LazyStream(ChunkIter(cast(Any, stream), chunk_size))  # ChunkIter only calls read()
    field_count = field_bytes = 0
    open_file: tuple[str, int] | None = None  # the file part being received: field name, size so far
    for part in InterBoundaryIter(body, b"--" + boundary):
        if open_file is not None:  # a boundary followed the file's bytes, so it is whole
            completed = handler.file_complete(open_file[1])
            if completed is not None:
                files.appendlist(open_file[0], completed)
            open_file = None
        headers = _read_headers(part)
        if headers is None:  # the preamble, the epilogue, or a part with no form-data name
            _drain(part)
        elif headers.filename:
            handler.new_file(headers.field_name, headers.filename, headers.content_type, None)
            size = 0
            for chunk in part:
                handler.receive_data_chunk(chunk, size)
                size += len(chunk)
            open_file = (headers.field_name, size)
        else:
            max_bytes = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            value = part.read() if max_bytes is None else part.read(max_bytes - field_bytes + 1)
            field_count += 1
            field_bytes += len(headers.field_name) + len(value) + 2  # as Django counts: `name=value&`
            max_fields = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
            if (max_fields is not None and field_count > max_fields) or (
                max_bytes is not None and field_bytes > max_bytes
            ):
                raise UploadRejected(
                    "too_many_fields",
                    "The form fields exceed DATA_UPLOAD_MAX_NUMBER_FIELDS or _MEMORY_SIZE.",
                    status=413,
                )
            fields.appendlist(headers.field_name, value.decode("utf-8", errors="replace"))
    _drain(body)
    return fields, files


def _drain(stream: Iterable[bytes]) -> None:
    deque(stream, maxlen=0)


def _read_headers(part: LazyStream) -> PartHeaders | None:
    """The part's headers, with the stream left at its first content byte; None if it has no form-data name."""
    limit = part_headers_limit()
    chunk = part.read(limit + 4)
    end = chunk.find(b"\r\n\r\n")
    if end == -1:
        if len(chunk) <= limit:
            return None  # the preamble or epilogue: no headers at all
        if b"filename" in chunk.lower():
            raise UploadRejected(
                "filename_too_long",
                f"The file part's headers are over {limit} bytes; a file name may have "
                f"{settings.FILE_UPLOAD_MAX_NAME_LENGTH} characters.",
            )
        raise UploadRejected("malformed_multipart", f"A part's headers are over {limit} bytes.")
    part.unget(chunk[end + 4 :])
    values: dict[str, tuple[str, dict[str, str]]] = {}
    for line in chunk[:end].split(b"\r\n"):
        try:
            main, params = parse_header_parameters(_decoded(line))
            name, value = main.split(":", 1)
        except ValueError:  # the CRLF after the boundary, or a line that is not a header: skipped, as Django does
            continue
        values[name.strip()] = (value.strip(), params)
    disposition = values.get("content-disposition", ("", {}))[1]
    encoding = values.get("content-transfer-encoding", ("", {}))[0]
    if encoding not in _IDENTITY_ENCODINGS:
        raise UploadRejected(
            "malformed_multipart", f"Content-Transfer-Encoding {encoding!r} is not used in multipart/form-data."
        )
    field_name = disposition.get("name", "").strip()
    if not field_name:
        return None
    content_type = values.get("content-type", ("", {}))[0]
    return PartHeaders(field_name=field_name, filename=disposition.get("filename", ""), content_type=content_type)


def _decoded(line: bytes) -> str:
    """A header line as text; a file name that is not UTF-8 is refused as such, any other such line is malformed."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        # Latin-1 maps every byte, so the parameters can be found and their own bytes judged.
        _, params = parse_header_parameters(line.decode("latin-1"))
    except ValueError:
        params = {}
    filename = params.get("filename")
    if filename is not None:
        try:
            filename.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            raise filename_not_utf8() from None
    raise UploadRejected("malformed_multipart", "A part header is not UTF-8.")
