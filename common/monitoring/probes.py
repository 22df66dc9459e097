"""Probes for load balancers and orchestrators."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe

from common.monitoring.services.readiness import check_readiness


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. No I/O, so a database outage never restarts web."""
    return JsonResponse({"status": "ok"})


@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 503 naming the dependency (database, broker) that did not answer; else 200, "ok" or "degraded".

    "degraded" (no live worker, or no beat leader ticking) stays 200 on purpose: web can
    still serve, and a 503 would pull every web instance out of the load balancer,
    turning a background problem into a full outage.
    """
    report = check_readiness()
    if not report["ok"]:
        status = "unavailable"
    elif report["degraded"]:
        status = "degraded"
    else:
        status = "ok"
    body = {"status": status, "checks": report["checks"]}
    if report["background"] is not None:
        body["background"] = report["background"]
    return JsonResponse(body, status=200 if report["ok"] else 503)
