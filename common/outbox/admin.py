"""Admin for the outbox: events with their deliveries, endpoints, deliveries and read-only attempts.

Every write goes through common.services; the admin only collects input and reports.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from common.outbox.models import DeliveryAttempt, OutboxEvent, WebhookDelivery, WebhookEndpoint
from common.outbox.services.emit import send_test_event
from common.outbox.services.endpoints import (
    create_endpoint,
    disable_endpoint,
    reenable_endpoint,
    rotate_secret,
    update_endpoint,
)
from common.outbox.services.guarded_http import check_resolved_url
from common.outbox.services.network_guard import BlockedDestinationError, check_url
from common.outbox.services.replay import replay_deliveries, retry_now
from common.outbox.services.subscriptions import validate_event_type_pattern


class ReadOnlyAdminMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DeliveryInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = WebhookDelivery
    fields = ("endpoint", "status", "attempt_count", "next_attempt_at", "last_status_code", "last_error")
    readonly_fields = fields
    extra = 0
    show_change_link = True


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("event_type", "aggregate_type", "aggregate_id", "idempotency_key", "created_at")
    list_filter = ("event_type", "aggregate_type")
    search_fields = ("=id", "aggregate_id", "idempotency_key")
    readonly_fields = ("id", "event_type", "aggregate_type", "aggregate_id", "payload", "idempotency_key", "created_at")
    inlines = [DeliveryInline]
    date_hierarchy = "created_at"


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https")

    class Meta:
        model = WebhookEndpoint
        fields = ("url", "description", "event_types")

    def clean_url(self) -> str:
        try:
            check_url(url=self.cleaned_data["url"])
            check_resolved_url(url=self.cleaned_data["url"])
        except BlockedDestinationError as exc:
            raise forms.ValidationError(str(exc)) from None
        return self.cleaned_data["url"]

    def clean_event_types(self) -> list[str]:
        value = self.cleaned_data["event_types"] or []
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise forms.ValidationError('a JSON list of event types, e.g. ["file.*", "user.created"]')
        for pattern in value:
            try:
                validate_event_type_pattern(pattern=pattern)
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from None
        return value


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    # Owner empty: an operator's endpoint (every event); otherwise a subscriber's, made on the portal's pages.
    list_display = ("url", "owner", "event_types", "is_active", "failing_since", "disabled_reason", "masked_secret")
    list_filter = ("is_active", ("owner", admin.EmptyFieldListFilter))
    search_fields = ("url", "description")
    readonly_fields = (
        "owner",
        "masked_secret",
        "is_active",
        "disabled_reason",
        "disabled_at",
        "failing_since",
        "created_at",
    )
    actions = ["rotate_secret_action", "send_test_event_action", "reenable_action", "disable_action"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        data = form.cleaned_data
        if change:
            update_endpoint(
                endpoint_id=obj.pk, url=data["url"], event_types=data["event_types"], description=data["description"]
            )
            return
        endpoint = create_endpoint(url=data["url"], event_types=data["event_types"], description=data["description"])
        obj.pk = endpoint.pk
        # The only time the full secret is shown; afterwards the admin masks it.
        self.message_user(request, f"Signing secret (copy it now, it is shown once): {endpoint.secret}")

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        # Deleting would cascade to the delivery history; disabling keeps it.
        disable_endpoint(endpoint_id=obj.pk, reason="deleted from the admin")
        self.message_user(request, "Endpoint disabled instead of deleted, to keep its delivery history.")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # Every action needs the change permission: Django offers an action without `permissions` to
    # anyone who can open the list, and rotating shows the new secret.
    @admin.action(description="Rotate secret (old one keeps signing during the grace period)", permissions=["change"])
    def rotate_secret_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for endpoint in queryset:
            rotated = rotate_secret(endpoint_id=endpoint.pk)
            self.message_user(request, f"{rotated.url}: new secret {rotated.secret}")

    @admin.action(description="Send test event", permissions=["change"])
    def send_test_event_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        queued = 0
        for endpoint in queryset:
            try:
                send_test_event(endpoint_id=endpoint.pk)
            except ValueError as exc:
                self.message_user(request, f"Not sent: {exc}", messages.ERROR)
                continue
            queued += 1
        if queued:
            self.message_user(request, f"Queued a webhook.test event to {queued} endpoint(s).")

    @admin.action(description="Re-enable", permissions=["change"])
    def reenable_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for endpoint in queryset:
            reenable_endpoint(endpoint_id=endpoint.pk)
        self.message_user(
            request, f"Re-enabled {queryset.count()} endpoint(s); replay their failed deliveries if needed."
        )

    @admin.action(description="Disable", permissions=["change"])
    def disable_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for endpoint in queryset:
            disable_endpoint(endpoint_id=endpoint.pk, reason=f"disabled from the admin by {request.user}")
        self.message_user(request, f"Disabled {queryset.count()} endpoint(s).")


class AttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = DeliveryAttempt
    fields = ("attempted_at", "status_code", "duration_ms", "error", "response_body")
    readonly_fields = fields
    extra = 0


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "event", "endpoint", "status", "attempt_count", "next_attempt_at", "last_status_code")
    list_filter = ("status", "endpoint")
    search_fields = ("=event__id", "event__aggregate_id")
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    list_select_related = ("event", "endpoint")
    inlines = [AttemptInline]
    actions = ["retry_now_action", "replay_action"]

    def has_replay_permission(self, request: HttpRequest) -> bool:
        # Deliveries are read-only in the admin, so "change" cannot be the model admin's own permission;
        # sending again is still a change to the delivery, so it needs the model's change permission.
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.action(description="Retry now (pending deliveries)", permissions=["replay"])
    def retry_now_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        count = retry_now(delivery_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{count} pending delivery(ies) due now.")

    @admin.action(description="Replay (delivered or failed deliveries, same webhook-id)", permissions=["replay"])
    def replay_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        count = replay_deliveries(delivery_ids=list(queryset.values_list("id", flat=True)))
        level = messages.SUCCESS if count else messages.WARNING
        self.message_user(request, f"{count} delivery(ies) queued again.", level)


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("delivery", "attempted_at", "status_code", "duration_ms", "succeeded", "error")
    list_filter = ("succeeded",)
    readonly_fields = [f.name for f in DeliveryAttempt._meta.fields]
