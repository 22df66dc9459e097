"""The portal's JSON API: token-authenticated upload, list, detail, delete and streamed download."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from portal.downloads import download_response
from portal.models import UploadFile
from portal.services.api_description import openapi_document
from portal.services.errors import UploadRejected
from portal.services.file_access import get_owned_upload, is_expired, open_for_download, owned_uploads
from portal.services.removal import delete_upload
from portal.services.request_body import ByteSource
from portal.services.tokens import authenticate_api_token
from portal.services.uploads import receive_upload

MAX_PAGE_SIZE = 100


class SignedInRequest(HttpRequest):
    """A request whose user is a real account (a valid API token, or login_required): for the type checker."""

    user: User


def error(code: str, message: str, status: int, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message}}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def file_json(upload: UploadFile) -> dict[str, Any]:
    return {
        "id": str(upload.id),
        "name": upload.original_filename,
        "content_type": upload.content_type,
        "size": upload.size_bytes,
        "sha256": upload.sha256,
        "status": "expired" if is_expired(upload=upload) else upload.status,
        "created_at": upload.created_at.isoformat(),
        "expires_at": upload.expires_at.isoformat(),
    }


def api_view(*methods: str) -> Callable[[Callable[..., HttpResponseBase]], Callable[..., HttpResponseBase]]:
    """JSON API wrapper: CSRF-exempt (token auth), HEAD wherever GET, 405 for other methods, 401 without a token."""
    # HEAD runs the GET view; the server sends its headers without the body (RFC 9110 9.3.2).
    allowed = (*methods, "HEAD") if "GET" in methods else methods

    def decorate(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in allowed:
                return error("method_not_allowed", f"Use {', '.join(allowed)}.", 405, Allow=", ".join(allowed))
            scheme, _, plaintext = request.headers.get("Authorization", "").partition(" ")
            token = authenticate_api_token(plaintext=plaintext.strip()) if scheme.lower() == "bearer" else None
            if token is None:
                return error(
                    "invalid_token",
                    "Send a valid API token as 'Authorization: Bearer <token>'.",
                    401,
                    WWW_Authenticate='Bearer realm="doorito"',
                )
            request.user = token.user
            try:
                return view(request, *args, **kwargs)
            except UploadRejected as exc:
                return error(exc.code, exc.message, exc.status)

        return wrapper

    return decorate


@api_view("GET", "POST")
def files(request: SignedInRequest) -> HttpResponse:
    if request.method == "POST":
        return _upload(request)
    try:
        size = int(request.GET.get("page_size", min(settings.FILE_UPLOAD_PAGE_SIZE, MAX_PAGE_SIZE)))
        if not 1 <= size <= MAX_PAGE_SIZE:  # refused, not clamped: a client must not miss files silently
            raise ValueError
    except ValueError:
        return error("invalid_page_size", f"page_size must be between 1 and {MAX_PAGE_SIZE}.", 400)
    paginator = Paginator(owned_uploads(owner=request.user), size)
    try:
        page = paginator.page(request.GET.get("page", 1))
    except PageNotAnInteger:
        return error("invalid_page", "page must be a whole number from 1.", 400)
    except EmptyPage:  # the paginator already parsed `page` as a whole number
        if int(request.GET["page"]) > paginator.num_pages:  # past the end: a missing resource, not bad input
            return error("page_not_found", f"There are {paginator.num_pages} page(s).", 404)
        return error("invalid_page", f"page must be between 1 and {paginator.num_pages}.", 400)
    return JsonResponse(
        {
            "count": paginator.count,
            "page": page.number,
            "pages": paginator.num_pages,
            "next_page": page.next_page_number() if page.has_next() else None,
            "results": [file_json(u) for u in page.object_list],
        }
    )


def body_stream(request: HttpRequest) -> ByteSource:
    """The request body to stream from: a chunked body (no Content-Length) only reads from the server's input."""
    chunked = not request.META.get("CONTENT_LENGTH") and request.META.get("wsgi.input_terminated")
    return request.META["wsgi.input"] if chunked else request


def _upload(request: SignedInRequest) -> HttpResponse:
    upload = receive_upload(owner=request.user, meta=request.META, stream=body_stream(request), params=request.GET)
    response = JsonResponse(file_json(upload), status=201)
    response["Location"] = f"{request.path.rstrip('/')}/{upload.id}"
    return response


@api_view("GET", "DELETE")
def file_detail(request: SignedInRequest, file_id: str) -> HttpResponse:
    upload = get_owned_upload(owner=request.user, file_id=file_id)
    if request.method == "DELETE":
        delete_upload(upload=upload)
        return HttpResponse(status=204)
    return JsonResponse(file_json(upload))


@api_view("GET")
def file_download(request: SignedInRequest, file_id: str) -> FileResponse:
    upload, handle = open_for_download(owner=request.user, file_id=file_id)
    return download_response(upload=upload, handle=handle)


@csrf_exempt
def unknown_endpoint(request: HttpRequest) -> JsonResponse:
    """Any other path under /api/: a JSON 404 with a stable code, whatever the method or token."""
    return error("unknown_endpoint", f"No API endpoint at {request.path}.", 404)


@csrf_exempt
def openapi_json(request: HttpRequest) -> JsonResponse:
    """The API's OpenAPI 3.1 document (portal/openapi.json); public, like any API description."""
    if request.method not in ("GET", "HEAD"):
        return error("method_not_allowed", "Use GET, HEAD.", 405, Allow="GET, HEAD")
    return JsonResponse(openapi_document())
