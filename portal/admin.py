"""Admin for uploads (read-only: writes go through services) and API tokens (created and revoked via services)."""

from collections import Counter
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from portal.models import ApiToken, ResumableUpload, UploadFile
from portal.services.removal import Removal, delete_upload
from portal.services.tokens import create_api_token, rename_api_token, revoke_api_token


class ApiTokenCreationForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "name", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "user__username"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiTokenCreationForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ["user", "name"] if obj is None else ["user", "name", *self.readonly_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [] if obj is None else ["user", *self.readonly_fields]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            rename_api_token(token=obj, name=form.cleaned_data["name"])
            return
        issued = create_api_token(user=form.cleaned_data["user"], name=form.cleaned_data["name"])
        obj.pk = issued.token.pk
        request._portal_issued_token = issued  # type: ignore[attr-defined]  # read by response_add, this request only

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: str | None = None) -> HttpResponse:
        issued = getattr(request, "_portal_issued_token", None)
        if issued is None:
            return super().response_add(request, obj, post_url_continue)
        # The only time the plaintext exists outside the client: rendered into this response and nowhere
        # else. Not a message (the messages framework keeps them in a cookie or the session), not cached.
        response = TemplateResponse(
            request,
            "admin/portal/apitoken/created.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "token": issued.token,
                "plaintext": issued.plaintext,
                "title": "API token created",
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: a revoked token stays listed for audit

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for token in queryset:
            revoke_api_token(token=token)
        self.message_user(request, f"Revoked {queryset.count()} token(s).", messages.SUCCESS)


class ResumableUploadInline(admin.StackedInline):
    """The tus state of an upload (offset, length, expiry), read-only: the protocol writes it."""

    model = ResumableUpload
    can_delete = False
    extra = 0

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in ResumableUpload._meta.fields]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UploadFile)
class UploadFileAdmin(admin.ModelAdmin):
    inlines = [ResumableUploadInline]
    list_display = ["original_filename", "owner", "status", "size_bytes", "content_type", "created_at", "expires_at"]
    list_filter = ["status"]
    search_fields = ["id", "original_filename", "sha256", "owner__" + get_user_model().USERNAME_FIELD]
    actions = ["delete_files"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [f.name for f in UploadFile._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the action below removes bytes and emits file.deleted

    @admin.action(description="Delete selected files (removes bytes, emits file.deleted or file.expired)")
    def delete_files(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        outcomes = Counter(delete_upload(upload=upload) for upload in queryset)
        parts = [f"Deleted {outcomes[Removal.DELETED]} file(s)."]
        if outcomes[Removal.SKIPPED]:
            parts.append(
                f"Skipped {outcomes[Removal.SKIPPED]} still uploading or failing "
                "(left to their request; cleanup removes them if they stall)."
            )
        if outcomes[Removal.PENDING]:
            parts.append(
                f"{outcomes[Removal.PENDING]} could not be removed now (see the log and cleanup_error): "
                "no longer served, cleanup retries them."
            )
        level = messages.SUCCESS if set(outcomes) <= {Removal.DELETED} else messages.WARNING
        self.message_user(request, " ".join(parts), level)
