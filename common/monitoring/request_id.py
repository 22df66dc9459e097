"""A request's log context outlives django-structlog's middleware, for the lines logged after it.

The response names the request id (X-Request-ID), for the client and gunicorn's
access line; the request keeps the whole context, for Django's own
`django.request` line about a 4xx/5xx answer.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from django.http import HttpRequest, HttpResponse


class RequestIdHeaderMiddleware:
    """Set X-Request-ID to the id django-structlog bound, and keep its context on the request (runs inside it)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        # django-structlog unbinds the context when its middleware returns, before Django and gunicorn log.
        context = structlog.contextvars.get_contextvars()
        request.structlog_context = context  # type: ignore[attr-defined]  # read by structured_logging
        if context.get("request_id"):
            response.headers.setdefault("X-Request-ID", context["request_id"])
        return response
