"""The subscriber's webhooks portal: own endpoints, secret once, test event, enable/disable, deliveries, replay.

Thin: every read and write goes through portal.services.own_webhooks, which scopes it to the signed-in user.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from common.outbox.models import WebhookDelivery, WebhookEndpoint
from common.outbox.services.network_guard import BlockedDestinationError
from portal.forms import EndpointForm, ReplaySinceForm
from portal.page_views import SignedInRequest, no_store
from portal.services.events import FILE_EVENT_TYPES
from portal.services.own_webhooks import (
    create_owned_endpoint,
    get_owned_endpoint,
    owned_endpoints,
    recent_deliveries,
    replay_owned_delivery,
    replay_owned_since,
    rotate_owned_secret,
    send_owned_test_event,
    set_owned_endpoint_active,
)


def _owned(request: SignedInRequest, endpoint_id: int) -> WebhookEndpoint:
    try:
        return get_owned_endpoint(owner=request.user, endpoint_id=endpoint_id)
    except WebhookEndpoint.DoesNotExist:
        raise Http404("No such endpoint.") from None


def _detail(request: SignedInRequest, endpoint: WebhookEndpoint, **extra: object) -> HttpResponse:
    context = {
        "endpoint": endpoint,
        "deliveries": recent_deliveries(owner=request.user, endpoint_id=endpoint.pk),
        "replay_form": extra.pop("replay_form", None) or ReplaySinceForm(),
        "event_descriptions": FILE_EVENT_TYPES,
        **extra,
    }
    return no_store(render(request, "portal/webhook_detail.html", context))


@login_required
@require_http_methods(["GET", "POST"])
def endpoint_list(request: SignedInRequest) -> HttpResponse:
    """The user's endpoints and the form to add one; a new endpoint's secret is shown once, here."""
    form = EndpointForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            endpoint = create_owned_endpoint(
                owner=request.user, url=data["url"], event_types=data["event_types"], description=data["description"]
            )
        except BlockedDestinationError as exc:  # the SSRF guard's reason, in its words
            form.add_error("url", f"Refused: {exc}")
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            return _detail(request, endpoint, new_secret=endpoint.secret)
    context = {"form": form, "endpoints": owned_endpoints(owner=request.user)}
    return render(request, "portal/webhooks.html", context)


@login_required
@require_http_methods(["GET"])
def endpoint_detail(request: SignedInRequest, endpoint_id: int) -> HttpResponse:
    """One endpoint: its settings, actions and recent deliveries with their attempts."""
    return _detail(request, _owned(request, endpoint_id))


@login_required
@require_POST
def endpoint_rotate(request: SignedInRequest, endpoint_id: int) -> HttpResponse:
    """Rotate the secret and show the new one this once."""
    try:
        endpoint = rotate_owned_secret(owner=request.user, endpoint_id=endpoint_id)
    except WebhookEndpoint.DoesNotExist:
        raise Http404("No such endpoint.") from None
    return _detail(request, endpoint, new_secret=endpoint.secret)


@login_required
@require_POST
def endpoint_test(request: SignedInRequest, endpoint_id: int) -> HttpResponse:
    """Queue a webhook.test event to the endpoint."""
    endpoint = _owned(request, endpoint_id)
    try:
        send_owned_test_event(owner=request.user, endpoint_id=endpoint.pk)
    except ValueError:
        messages.error(request, "The endpoint is disabled; enable it before sending a test event.")
    else:
        messages.success(request, "Test event queued; refresh to see its delivery.")
    return redirect("webhook", endpoint_id=endpoint.pk)


@login_required
@require_POST
def endpoint_set_active(request: SignedInRequest, endpoint_id: int) -> HttpResponse:
    """Enable (active=1) or disable (active=0) the endpoint."""
    active = request.POST.get("active") == "1"
    try:
        set_owned_endpoint_active(owner=request.user, endpoint_id=endpoint_id, active=active)
    except WebhookEndpoint.DoesNotExist:
        raise Http404("No such endpoint.") from None
    messages.success(request, "Endpoint enabled." if active else "Endpoint disabled; waiting deliveries failed.")
    return redirect("webhook", endpoint_id=endpoint_id)


@login_required
@require_POST
def endpoint_replay_since(request: SignedInRequest, endpoint_id: int) -> HttpResponse:
    """Replay every failed (or, if ticked, every finished) delivery of the endpoint from the given time on."""
    endpoint = _owned(request, endpoint_id)
    form = ReplaySinceForm(request.POST)
    if not form.is_valid():
        return _detail(request, endpoint, replay_form=form)
    include_delivered = form.cleaned_data["include_delivered"]
    count = replay_owned_since(
        owner=request.user,
        endpoint_id=endpoint.pk,
        since=form.cleaned_data["since"],
        include_delivered=include_delivered,
    )
    kind = "finished" if include_delivered else "failed"
    messages.success(request, f"{count} {kind} delivery(ies) queued again.")
    return redirect("webhook", endpoint_id=endpoint.pk)


@login_required
@require_POST
def delivery_replay(request: SignedInRequest, delivery_id: int) -> HttpResponse:
    """Send one finished delivery again, with the same webhook-id."""
    try:
        endpoint_id, count = replay_owned_delivery(owner=request.user, delivery_id=delivery_id)
    except WebhookDelivery.DoesNotExist:
        raise Http404("No such delivery.") from None
    if count:
        messages.success(request, "Delivery queued again.")
    else:
        messages.warning(request, "Not replayed: it is still pending, or the endpoint is disabled.")
    return redirect("webhook", endpoint_id=endpoint_id)
