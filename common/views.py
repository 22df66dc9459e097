"""Probes for load balancers and orchestrators."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from common.services.health import check_readiness


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. No I/O, so a database outage never restarts web."""
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when every dependency answers, 503 naming the one that did not."""
    report = check_readiness()
    return JsonResponse(
        {"status": "ok" if report["ok"] else "unavailable", "checks": report["checks"]},
        status=200 if report["ok"] else 503,
    )
