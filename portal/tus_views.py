"""The tus 1.0 endpoints (/api/uploads/): HTTP in and out only; the protocol lives in portal.services.resumable."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from portal.services.errors import UploadRejected
from portal.services.resumable.appending import append_to_upload
from portal.services.resumable.concatenation import create_final_upload
from portal.services.resumable.creation import create_upload
from portal.services.resumable.protocol import (
    CHECKSUM_ALGORITHMS,
    EXTENSIONS,
    OFFSET_CONTENT_TYPE,
    TUS_VERSION,
    UploadMetadata,
    http_expires,
    is_supported_version,
    parse_checksum,
    parse_concat,
    parse_metadata,
    parse_size_header,
)
from portal.services.resumable.state import UploadStatus, describe_upload
from portal.services.resumable.termination import terminate_upload
from portal.services.tokens import authenticate_api_token
from portal.views import body_stream, error

TusView = Callable[..., HttpResponse]


class _CsrfCheck(CsrfViewMiddleware):
    """Django's CSRF check, answering the reason instead of a 403 page."""

    def _reject(self, request: HttpRequest, reason: str) -> str:
        return reason


def _authenticate(request: HttpRequest) -> HttpResponse | None:
    """A Bearer API token, or else the browser session with its CSRF token; an error response if neither."""
    if "Authorization" in request.headers:
        scheme, _, plaintext = request.headers["Authorization"].partition(" ")
        token = authenticate_api_token(plaintext=plaintext.strip()) if scheme.lower() == "bearer" else None
        if token is not None:
            request.user = token.user
            return None
    elif request.user.is_authenticated:
        check = _CsrfCheck(lambda _request: HttpResponse())
        check.process_request(request)
        reason = check.process_view(request, lambda _request: HttpResponse(), (), {})
        if reason is None:
            return None
        return error("csrf_failed", f"CSRF check failed: {reason}. Send the X-CSRFToken header.", 403)
    return error(
        "invalid_token",
        "Send a valid API token as 'Authorization: Bearer <token>', or sign in.",
        401,
        WWW_Authenticate='Bearer realm="doorito"',
    )


def _owner(request: HttpRequest) -> User:
    """The signed-in user of an authenticated request (_authenticate let no anonymous one through)."""
    user = request.user
    if not isinstance(user, User):
        raise UploadRejected("invalid_token", "Send a valid API token or sign in.", status=401)
    return user


def _options(methods: tuple[str, ...]) -> HttpResponse:
    response = HttpResponse(status=204)
    response["Tus-Version"] = TUS_VERSION
    response["Tus-Extension"] = ",".join(EXTENSIONS)
    response["Tus-Max-Size"] = str(settings.FILE_UPLOAD_MAX_SIZE)
    response["Tus-Checksum-Algorithm"] = ",".join(CHECKSUM_ALGORITHMS)
    response["Allow"] = ", ".join(("OPTIONS", *methods))
    return response


def tus_endpoint(*methods: str) -> Callable[[TusView], Callable[..., HttpResponse]]:
    """Wrap a tus view: method override, OPTIONS, Tus-Resumable (412 otherwise), auth, JSON errors, no HEAD body."""

    def decorate(view: TusView) -> Callable[..., HttpResponse]:
        @csrf_exempt  # checked in _authenticate for session users; tokens need none
        @functools.wraps(view)
        def wrapper(request: HttpRequest, **kwargs: str) -> HttpResponse:
            method = request.method or "GET"
            if method == "POST" and request.headers.get("X-HTTP-Method-Override"):
                # For clients and proxies that cannot send PATCH or DELETE (tus-js-client overridePatchMethod).
                method = request.headers["X-HTTP-Method-Override"].strip().upper()
            response = _dispatch(request, method, methods, view, kwargs)
            response["Tus-Resumable"] = TUS_VERSION
            if method == "HEAD":
                response.content = b""
            return response

        return wrapper

    return decorate


def _dispatch(
    request: HttpRequest, method: str, methods: tuple[str, ...], view: TusView, kwargs: dict[str, str]
) -> HttpResponse:
    if method == "OPTIONS":
        return _options(methods)
    if method not in methods:
        allowed = ", ".join(("OPTIONS", *methods))
        return error("method_not_allowed", f"Use {allowed}.", 405, Allow=allowed)
    if not is_supported_version(raw=request.headers.get("Tus-Resumable")):
        response = error("unsupported_tus_version", f"Send Tus-Resumable: {TUS_VERSION}.", 412)
        response["Tus-Version"] = TUS_VERSION
        return response
    refused = _authenticate(request)
    if refused is not None:
        return refused
    try:
        return view(request, method, **kwargs)
    except UploadRejected as exc:
        return error(exc.code, exc.message, exc.status)


def _content_length(request: HttpRequest) -> int | None:
    return parse_size_header(raw=request.META.get("CONTENT_LENGTH") or None, name="Content-Length")


def _status_headers(response: HttpResponse, status: UploadStatus) -> HttpResponse:
    response["Upload-Offset"] = str(status.offset)
    if status.expires_at is not None:
        response["Upload-Expires"] = http_expires(moment=status.expires_at)
    return response


def _upload_url(request: HttpRequest, upload_id: object) -> str:
    return request.build_absolute_uri(f"/api/uploads/{upload_id}")


@tus_endpoint("POST")
def uploads(request: HttpRequest, method: str) -> HttpResponse:
    """POST: create an upload (creation, -with-upload, -defer-length, partial), or a final one (concatenation)."""
    metadata: UploadMetadata = parse_metadata(raw=request.headers.get("Upload-Metadata"))
    concat = parse_concat(raw=request.headers.get("Upload-Concat"))
    if concat.kind == "final":
        final = create_final_upload(owner=_owner(request), concat=concat, metadata=metadata)
        response = HttpResponse(status=201)
        response["Location"] = _upload_url(request, final.file_id)
        return response
    has_body = request.content_type == OFFSET_CONTENT_TYPE
    if not has_body and (_content_length(request) or 0) > 0:
        raise UploadRejected("invalid_content_type", f"A body needs Content-Type: {OFFSET_CONTENT_TYPE}.", status=415)
    checksum = parse_checksum(raw=request.headers.get("Upload-Checksum"))
    resumable = create_upload(
        owner=_owner(request),
        length=parse_size_header(raw=request.headers.get("Upload-Length"), name="Upload-Length"),
        defer_length=request.headers.get("Upload-Defer-Length", "").strip() == "1",
        metadata=metadata,
        concat=concat,
    )
    location = _upload_url(request, resumable.file_id)
    try:
        status = describe_upload(owner=_owner(request), upload_id=str(resumable.file_id))
        if has_body:  # creation-with-upload
            status = append_to_upload(
                owner=_owner(request),
                upload_id=str(resumable.file_id),
                offset=0,
                body=body_stream(request),
                content_length=_content_length(request),
                checksum=checksum,
            )
    except UploadRejected as exc:
        # The upload exists: say where, so the client can resume it (or see it was removed).
        return error(exc.code, exc.message, exc.status, Location=location)
    response = _status_headers(HttpResponse(status=201), status)
    response["Location"] = location
    return response


@tus_endpoint("HEAD", "PATCH", "DELETE")
def upload(request: HttpRequest, method: str, upload_id: str) -> HttpResponse:
    """HEAD: offset and length; PATCH: append at Upload-Offset; DELETE: termination."""
    if method == "DELETE":
        terminate_upload(owner=_owner(request), upload_id=upload_id)
        return HttpResponse(status=204)
    if method == "HEAD":
        status = describe_upload(owner=_owner(request), upload_id=upload_id)
        response = _status_headers(HttpResponse(status=200), status)
        if status.length is None:
            response["Upload-Defer-Length"] = "1"
        else:
            response["Upload-Length"] = str(status.length)
        if status.metadata:
            response["Upload-Metadata"] = status.metadata
        if status.concat_header:
            response["Upload-Concat"] = status.concat_header
        response["Cache-Control"] = "no-store"
        return response
    if request.content_type != OFFSET_CONTENT_TYPE:
        raise UploadRejected("invalid_content_type", f"Send PATCH bodies as {OFFSET_CONTENT_TYPE}.", status=415)
    offset = parse_size_header(raw=request.headers.get("Upload-Offset"), name="Upload-Offset")
    if offset is None:
        raise UploadRejected("invalid_upload_offset", "Send Upload-Offset.")
    status = append_to_upload(
        owner=_owner(request),
        upload_id=upload_id,
        offset=offset,
        body=body_stream(request),
        content_length=_content_length(request),
        checksum=parse_checksum(raw=request.headers.get("Upload-Checksum")),
        declared_length=parse_size_header(raw=request.headers.get("Upload-Length"), name="Upload-Length"),
    )
    return _status_headers(HttpResponse(status=204), status)
