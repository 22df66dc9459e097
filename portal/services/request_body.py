"""Reading a request body: a failed read is the client's fault (gone, or broken framing), never the server's."""

from __future__ import annotations

from typing import Protocol

try:  # gunicorn reports broken chunked framing with its own (non-OSError) exceptions
    from gunicorn.http.errors import ParseException as _FramingError
except ImportError:  # pragma: no cover - another WSGI server
    _FramingError = OSError

# What reading the request body raises when the client goes away or sends broken framing:
# OSError covers Django's UnreadablePostError, gunicorn's NoMoreData, resets and socket timeouts.
_CLIENT_READ_ERRORS = (OSError, _FramingError)


class ByteSource(Protocol):
    """What a request body is read from: an HttpRequest, a WSGI input stream, a file."""

    def read(self, size: int = ..., /) -> bytes: ...


class ClientGone(Exception):
    """Reading the request body failed: the client's side, whatever the exception was."""


class ClientStream:
    """The request body, read-only; a failed read becomes ClientGone, so an OSError elsewhere is the server's.

    With a declared `length`, an end of the body before that many bytes is ClientGone too: WSGI servers report a
    client that stopped short (half-closed or hung up) as a quiet end of input, which would pass for a whole body.
    """

    def __init__(self, stream: ByteSource, *, length: int | None = None) -> None:
        self._stream = stream
        self._length = length
        self.received = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._stream.read(size)
        except _CLIENT_READ_ERRORS as exc:
            raise ClientGone(str(exc) or type(exc).__name__) from exc
        self.received += len(data)
        if not data and size != 0 and self._length is not None and self.received < self._length:
            raise ClientGone(f"the body ended after {self.received} of {self._length} bytes")
        return data
