"""The status report as JSON (for scripts and dashboards), as a staff-only admin page, and as Prometheus metrics."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.monitoring.services.metrics import build_registry
from common.monitoring.services.status import build_status_report

_metrics_registry = build_registry()


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


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format for 'Authorization: Bearer <METRICS_TOKEN>'; 404 while METRICS_TOKEN is unset."""
    token = settings.METRICS_TOKEN
    if not token:
        return JsonResponse({"error": "metrics are disabled: set METRICS_TOKEN to enable /metrics"}, status=404)
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), token.encode()):
        response = JsonResponse({"error": "send 'Authorization: Bearer <METRICS_TOKEN>'"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(_metrics_registry), content_type=CONTENT_TYPE_LATEST)
