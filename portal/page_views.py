"""The uploader's pages: home redirect, My files, download, delete, upload and API tokens.

Thin: every read and write goes through portal.services; every write is a POST checked for CSRF.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal.downloads import download_response
from portal.forms import TokenForm, ttl_choices
from portal.models import ApiToken, UploadFile
from portal.services.errors import UploadRejected
from portal.services.file_access import get_owned_upload, is_expired, open_for_download, owned_uploads
from portal.services.removal import Removal, delete_upload
from portal.services.tokens import create_api_token, revoke_user_api_token, user_api_tokens
from portal.services.uploads import receive_upload
from portal.views import SignedInRequest, body_stream

SHORT_SHA256 = 12  # hex characters shown in the list; the full value is copied


def no_store(response: HttpResponse) -> HttpResponse:
    """Mark a response that shows a secret as never to be cached."""
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Signed in: your files; otherwise the sign-in page."""
    return redirect("files" if request.user.is_authenticated else "login")


@login_required
@require_GET
def file_list(request: SignedInRequest) -> HttpResponse:
    """The user's files, newest first, one page at a time."""
    paginator = Paginator(owned_uploads(owner=request.user), settings.FILE_UPLOAD_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    now = timezone.now()
    rows = [
        {"file": upload, "expired": is_expired(upload=upload, now=now), "short_sha256": upload.sha256[:SHORT_SHA256]}
        for upload in page.object_list
    ]
    return render(request, "portal/files.html", {"page": page, "rows": rows, "now": now})


def _owned_or_404(request: SignedInRequest, file_id: uuid.UUID) -> UploadFile:
    try:
        return get_owned_upload(owner=request.user, file_id=file_id)
    except UploadRejected:
        raise Http404("No such file.") from None


@login_required
@require_GET
def file_download(request: SignedInRequest, file_id: uuid.UUID) -> HttpResponseBase:
    """The file's bytes; 404 for another user's file, 410 once expired (even before cleanup)."""
    try:
        upload, handle = open_for_download(owner=request.user, file_id=file_id)
    except UploadRejected as exc:
        if exc.status == 404:
            raise Http404(exc.message) from None
        return render(request, "portal/gone.html", {"message": exc.message}, status=exc.status)
    return download_response(upload=upload, handle=handle)


@login_required
@require_http_methods(["GET", "POST"])
def file_delete(request: SignedInRequest, file_id: uuid.UUID) -> HttpResponse:
    """GET asks for confirmation; POST deletes and goes back to the list."""
    upload = _owned_or_404(request, file_id)
    if request.method == "GET":
        return render(request, "portal/file_delete.html", {"file": upload})
    outcome = delete_upload(upload=upload)
    if outcome == Removal.SKIPPED:
        messages.warning(request, f"{upload.original_filename} is still being uploaded; try again when it is done.")
    else:
        messages.success(request, f"Deleted {upload.original_filename}.")
    return redirect("files")


@login_required
@require_GET
def upload(request: SignedInRequest) -> HttpResponse:
    """The upload page: Uppy over tus with JavaScript, a plain one-request form without."""
    return _upload_page(request)


def _upload_page(request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
    context = {"ttl_choices": ttl_choices(), "default_ttl": settings.FILE_UPLOAD_TTL_HOURS, "error": error}
    return render(request, "portal/upload.html", context, status=status)


def _csrf_accepted(request: HttpRequest) -> HttpResponse:
    """Never called: the view CsrfViewMiddleware is asked about (it must not be csrf_exempt)."""
    return HttpResponse()


@csrf_exempt  # checked in check_fields below, once the streamed form fields are known
@login_required
@require_POST
def upload_plain(request: SignedInRequest) -> HttpResponse:
    """The no-JavaScript upload: one multipart request streamed by the same service as the API."""

    def check_csrf(fields: Mapping[str, str]) -> None:
        # The middleware would parse request.POST itself and buffer the whole file on disk before our
        # streaming handler saw it; so the body is streamed first and its fields handed to the same check.
        request._post, request._files = fields, {}  # type: ignore[attr-defined]
        refusal = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, _csrf_accepted, (), {})
        if refusal is not None:
            message = "The form expired or did not come from this site; reload it."
            raise UploadRejected("csrf_failed", message, status=403)

    try:
        stored = receive_upload(
            owner=request.user, meta=request.META, stream=body_stream(request), params={}, check_fields=check_csrf
        )
    except UploadRejected as exc:
        return _upload_page(request, error=exc.message, status=exc.status)
    messages.success(request, f"Uploaded {stored.original_filename}.")
    return redirect("files")


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: SignedInRequest) -> HttpResponse:
    """The user's API tokens; POST creates one and shows it this once."""
    form = TokenForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        created = create_api_token(user=request.user, name=form.cleaned_data["name"]).plaintext
        form = TokenForm()
    context = {"form": form, "tokens": user_api_tokens(user=request.user), "created": created}
    return no_store(render(request, "portal/tokens.html", context))


@login_required
@require_POST
def token_revoke(request: SignedInRequest, token_id: int) -> HttpResponse:
    """Revoke one of the user's tokens (404 for anyone else's)."""
    try:
        token = revoke_user_api_token(user=request.user, token_id=token_id)
    except ApiToken.DoesNotExist:
        raise Http404("No such token.") from None
    messages.success(request, f"Revoked {token.prefix}….")
    return redirect("tokens")
