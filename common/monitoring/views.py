"""The status report as JSON (for scripts and dashboards) and as a staff-only admin page."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from common.monitoring.services.status import build_status_report


@never_cache
@require_safe
def status_json(request: HttpRequest) -> JsonResponse:
    """The status report as JSON: staff session only (401 when not signed in, 403 when not staff)."""
    user = request.user
    if not user.is_authenticated:
        return JsonResponse({"error": "authentication required: sign in as a staff user"}, status=401)
    if not (user.is_active and user.is_staff):
        return JsonResponse({"error": "staff only"}, status=403)
    return JsonResponse(build_status_report())


@never_cache
def status_page(request: HttpRequest) -> HttpResponse:
    """The status report inside the admin (wrapped in admin_view, so staff only)."""
    context = {
        **admin.site.each_context(request),
        "title": "Operations status",
        "report": build_status_report(),
    }
    return TemplateResponse(request, "monitoring/status.html", context)
